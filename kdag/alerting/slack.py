"""Slack incoming webhooks, through slack-sdk.

Every message names the DAG, run, task, attempt and reason, and links to the
run (or the task's log) in kdag's UI. Every error of slack-sdk is translated
here: the network's and Slack's answers become TemporaryError, so the outbox
tries again; a URL the client cannot use at all becomes PermanentError.
"""

from __future__ import annotations

from http.client import InvalidURL
from typing import Any

from slack_sdk.errors import SlackClientError, SlackRequestError
from slack_sdk.webhook import WebhookClient

from kdag.errors import PermanentError, TemporaryError


class SlackNotifier:
    def __init__(
        self, webhook_url: str, *, base_url: str, timeout_s: float = 10
    ) -> None:
        self.client = WebhookClient(webhook_url, timeout=int(timeout_s))
        self.base_url = base_url.rstrip("/")

    def send(self, alert: dict[str, Any]) -> None:
        text, link = render(alert, self.base_url)
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in kdag"},
                        "url": link,
                    }
                ],
            },
        ]
        try:
            answer = self.client.send(text=text, blocks=blocks)
        except (SlackRequestError, InvalidURL, ValueError) as error:
            # No scheme, a bad port or host: the same URL will never work.
            raise PermanentError(f"Slack webhook URL unusable: {error}") from error
        except (SlackClientError, OSError) as error:
            raise TemporaryError(f"Slack webhook unreachable: {error}") from error
        except Exception as error:  # NB: nothing from the client may reach the loop
            raise TemporaryError(f"Slack webhook failed: {error!r}") from error
        if answer.status_code != 200:
            raise TemporaryError(
                f"Slack webhook answered {answer.status_code}: {answer.body[:200]}"
            )


def render(alert: dict[str, Any], base_url: str) -> tuple[str, str]:
    """Return the message text and the UI link of one alert."""
    run_link = f"{base_url}/runs/{alert['run_id']}"
    if alert["kind"] == "task_failed":
        link = f"{run_link}/tasks/{alert['task']}/attempts/{alert['attempt']}"
        code = alert.get("exit_code")
        reason = alert.get("reason") or "unknown"
        detail = f"{reason}, exit code {code}" if code is not None else reason
        text = (
            f":red_circle: *{alert['dag']}*: task *{alert['task']}* failed "
            f"(run {alert['run_id']}, attempt {alert['attempt']}): {detail}\n"
            f"<{link}|Log of {alert['task']}, attempt {alert['attempt']}>"
        )
        return text, link
    failed = ", ".join(alert.get("failed_tasks") or []) or "none"
    text = (
        f":x: *{alert['dag']}*: run {alert['run_id']} failed "
        f"(logical date {alert.get('logical_date', '?')}; failed tasks: {failed})\n"
        f"<{run_link}|Run {alert['run_id']}>"
    )
    return text, run_link
