"""archsearch surrogates."""
