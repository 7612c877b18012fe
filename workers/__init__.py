"""Compute side: verifiers (workers/verifiers), generation backends (workers/generation) and the
worker entry that turns a Job into a JobResult. Runs and tests without the web layer."""
