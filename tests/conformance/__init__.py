"""Conformance suites: one reusable test class per extension point (loop, space, trainer,
storage) and the subclasses that run it on every implementation."""
