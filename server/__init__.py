"""archsearch server."""
