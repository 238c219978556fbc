"""What a handler may raise to say more than "this attempt failed".

Any other exception fails the attempt, which is retried after the backoff
until the step's attempts are spent (or, with the step option
`retry_on=(...)`, only if it is one of those exceptions).
"""

from __future__ import annotations


class Fail(Exception):  # noqa: N818 - a verb: `raise Fail("card declined")`
    """Fail the task now, without spending its remaining attempts; its run
    fails with this message."""


class RetryAfter(Exception):  # noqa: N818 - `raise RetryAfter(30)`
    """Fail this attempt and retry after `seconds` (0 to 86,400) instead of the
    backoff delay, e.g. what a rate-limited API asked for. It counts as an
    attempt: past the step's max_attempts the task fails."""

    def __init__(self, seconds: float, message: str = "") -> None:
        if not 0 <= seconds <= 86400:
            raise ValueError(f"RetryAfter: seconds must be between 0 and 86400, not {seconds}")
        self.seconds = round(seconds)
        super().__init__(message or f"retry after {self.seconds} s")
