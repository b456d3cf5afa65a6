"""archsearch spaces."""
