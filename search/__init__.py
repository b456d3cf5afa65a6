"""archsearch search."""
