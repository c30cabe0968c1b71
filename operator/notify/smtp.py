"""E-mail notifier over SMTP (STARTTLS by default); the password comes from a Secret."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Awaitable, Callable
from email.message import EmailMessage

from . import Notice, NotifyError

PasswordSource = Callable[[], Awaitable[str | None]]


class SmtpNotifier:
    name = "email"

    def __init__(self, host: str, port: int, sender: str, *, username: str | None = None,
                 password: PasswordSource | None = None, starttls: bool = True,
                 always_to: tuple[str, ...] = (), timeout: float = 15.0) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.username, self._password = username, password
        self.starttls, self.always_to, self.timeout = starttls, always_to, timeout

    def message(self, notice: Notice) -> EmailMessage | None:
        to = sorted({*self.always_to, *notice.recipients})
        if not to:
            return None
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, ", ".join(to), notice.subject
        msg["Message-ID"] = f"<{notice.id}@kameng>"  # stable: a resend is recognisable
        msg.set_content(f"{notice.message}\n\nLicense: {notice.license}\nSub-site: "
                        f"{notice.site}\nTerm ends: {notice.term_end}\nRead-only grace "
                        f"until: {notice.grace_until}\n")
        return msg

    async def send(self, notice: Notice) -> None:
        msg = self.message(notice)
        if msg is None:
            return
        password = await self._password() if self._password is not None else None
        await asyncio.to_thread(self._deliver, msg, password)

    def _deliver(self, msg: EmailMessage, password: str | None) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as s:
                if self.starttls:
                    s.starttls(context=ssl.create_default_context())
                if self.username and password:
                    s.login(self.username, password)
                s.send_message(msg)
        except (OSError, smtplib.SMTPException) as e:
            # The class only: SMTP auth errors can quote what the client sent.
            raise NotifyError(f"smtp {self.host}:{self.port} failed ({type(e).__name__})"
                              ) from None
