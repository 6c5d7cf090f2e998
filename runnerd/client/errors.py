"""How a client command ends: its exit codes, and the errors that end it."""

from __future__ import annotations

from typing import Any

from ..models import FailureReason

EXIT_OK = 0
EXIT_ERROR = 1  # the API answered with an error, or the daemon could not be reached
EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well)
EXIT_TIMEOUT = 124  # the run hit its timeout_seconds (as coreutils' `timeout`)
EXIT_NOT_STARTED = 125  # the run never started: image_pull_failed or start_failed
EXIT_LOST = 126  # the run's container disappeared: the result is unknown
EXIT_CANCELED = 130  # the run was canceled (or this client was interrupted: 128 + SIGINT)
FAILURE_EXIT_CODES = {
    FailureReason.TIMEOUT.value: EXIT_TIMEOUT,
    FailureReason.IMAGE_PULL_FAILED.value: EXIT_NOT_STARTED,
    FailureReason.START_FAILED.value: EXIT_NOT_STARTED,
    FailureReason.LOST.value: EXIT_LOST,
    FailureReason.CANCELED.value: EXIT_CANCELED,
}


class CliError(Exception):
    """Ends the command: each line goes to stderr as `runnerd: line`, then `code`."""

    def __init__(self, *lines: str, code: int = EXIT_ERROR) -> None:
        super().__init__("; ".join(lines))
        self.lines = list(lines)
        self.code = code


class ApiError(CliError):
    """The daemon answered with an error status; the lines are its own messages."""

    def __init__(self, status: int, reason: str, body: Any) -> None:
        if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
            lines = [str(e) for e in body["errors"]]
        elif isinstance(body, dict) and isinstance(body.get("error"), str):
            lines = [f"{body.get('status', status)} {body['error']}"]
        else:
            lines = [f"{status} {reason}".rstrip()]
        if status == 401:
            lines.append("check the API key given with --token or $RUNNERD_TOKEN")
        elif status == 403:
            lines.append("this API key is read-only")
        super().__init__(*lines)
        self.status = status
        self.body = body
