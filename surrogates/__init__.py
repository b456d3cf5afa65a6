"""Surrogates: graph edit distance, Transformer2vec embeddings, BOSHNAS and GP proposers."""

from __future__ import annotations

from archsearch.surrogates._boshnas import BoshnasProposer, exploitation_streak
from archsearch.surrogates._boshnas_surrogate import BoshnasSurrogate, FitReport
from archsearch.surrogates._embedding_fidelity import rank_fidelity
from archsearch.surrogates._embedding_gp import EmbeddingGPProposer
from archsearch.surrogates._feature_choice import FeatureChoice, choose_features, loo_spearman
from archsearch.surrogates._ged import (
    EDGE_INDEL_COST,
    GED_METHODS,
    GedMethod,
    LabelCosts,
    PreparedGraph,
    assignment_edit_distance,
    graph_edit_distance,
    pairwise_edit_distances,
    prepare_graph,
    prepared_edit_distance,
)
from archsearch.surrogates._gobi import GobiResult, gobi
from archsearch.surrogates._library_proposer import (
    LibraryProposer,
    Proposal,
    chebyshev_performance,
)
from archsearch.surrogates._transformer2vec import Transformer2vec
from archsearch.surrogates._transformer2vec_file import (
    FORMAT_VERSION as TRANSFORMER2VEC_FORMAT_VERSION,
)

__all__ = [
    "EDGE_INDEL_COST",
    "GED_METHODS",
    "TRANSFORMER2VEC_FORMAT_VERSION",
    "BoshnasProposer",
    "BoshnasSurrogate",
    "EmbeddingGPProposer",
    "FeatureChoice",
    "FitReport",
    "GedMethod",
    "GobiResult",
    "LabelCosts",
    "LibraryProposer",
    "PreparedGraph",
    "Proposal",
    "Transformer2vec",
    "assignment_edit_distance",
    "chebyshev_performance",
    "choose_features",
    "exploitation_streak",
    "gobi",
    "graph_edit_distance",
    "loo_spearman",
    "pairwise_edit_distances",
    "prepare_graph",
    "prepared_edit_distance",
    "rank_fidelity",
]
