"""archsearch worker."""
