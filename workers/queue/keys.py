"""Every Redis key the queue uses, in one place. ``prefix`` isolates deployments (and tests)."""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "workers"  # the consumer group every worker joins
JOB_FIELD = "job"  # stream entry field holding the Job JSON


@dataclass(frozen=True)
class QueueKeys:
    prefix: str = "weaver"

    @property
    def stream(self) -> str:
        """Stream of pending jobs (entries are deleted once answered, so XLEN = waiting + running)."""
        return f"{self.prefix}:jobs"

    @property
    def workers(self) -> str:
        """Hash: worker name -> JSON heartbeat (its catalogue and a timestamp)."""
        return f"{self.prefix}:workers"

    def result(self, job_id: str) -> str:
        """The one stored result of a job (SET NX: the first writer wins)."""
        return f"{self.prefix}:result:{job_id}"

    def reply(self, job_id: str) -> str:
        """List the gateway BLPOPs for the job's result."""
        return f"{self.prefix}:reply:{job_id}"

    def live(self, job_id: str) -> str:
        """Hash of a job not yet answered: ``waiters`` (gateways waiting), ``fp`` (request digest), ``entry``."""
        return f"{self.prefix}:live:{job_id}"

    def fingerprint(self, job_id: str) -> str:
        """Digest of the request behind a keyed job: a replayed result must answer the same request."""
        return f"{self.prefix}:fingerprint:{job_id}"

    def cancelled(self, job_id: str) -> str:
        """Set (to the reason) when nobody waits for the job any more: a worker must not start it."""
        return f"{self.prefix}:cancelled:{job_id}"

    @property
    def cancel_channel(self) -> str:
        """Pub/sub channel of ``<job id> <reason>`` messages: the worker running that job cancels it."""
        return f"{self.prefix}:cancel"

    def attempts(self, job_id: str) -> str:
        """How many times a worker started the job (poison-job guard)."""
        return f"{self.prefix}:attempts:{job_id}"

    def rate(self, key_id: str, window: int) -> str:
        """Per-API-key request counter for one rate-limit window."""
        return f"{self.prefix}:rate:{key_id}:{window}"
