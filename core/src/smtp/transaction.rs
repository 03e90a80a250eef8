//! Mail transactions on a session, with as few round trips as the server allows:
//! - CHUNKING and PIPELINING (RFC 3030, 2920): MAIL, every RCPT and `BDAT <size> LAST` with
//!   the message in one write — one round trip per mail;
//! - PIPELINING alone: MAIL, every RCPT and DATA in one write, then the content; the next
//!   mail's MAIL/RCPT/DATA may ride with this mail's content (`next`), so a stream of mails
//!   also costs one round trip each;
//! - neither: one command at a time, as RFC 821 clients do.
//!
//! Each recipient's answer is kept, in the order written. Content is only ever sent for one
//! mail at a time: the next mail's content waits for the next call.

use lettre::Address;

use super::reply::Reply;
use super::session::Session;
use super::wire;
use super::{Delivery, RecipientResult, SmtpError, Stage};

/// A mail as it goes on the wire.
pub struct Outbound {
    /// The caller's name for the mail (the queue id): which envelope went out ahead.
    pub id: i64,
    /// `None` is the null sender `<>` (bounces, automatic answers).
    pub from: Option<Address>,
    pub to: Vec<Address>,
    /// CRLF-normalised (`wire::normalize`), DKIM-signed when signed at all.
    pub message: Vec<u8>,
}

/// The server's answers to a mail's envelope.
struct Envelope {
    recipients: Vec<(String, RecipientResult)>,
    accepted: usize,
    /// The answer to DATA, when DATA was sent with the envelope.
    data: Option<Reply>,
}

impl Session {
    /// Sends one mail to each of its recipients; an `Err` means the connection or the sender
    /// failed and nobody received it. With `next`, the next mail's envelope is written ahead
    /// (servers with PIPELINING but no CHUNKING): the following call must send `next`.
    pub fn send(
        &mut self,
        mail: &Outbound,
        next: Option<&Outbound>,
    ) -> Result<Delivery, SmtpError> {
        if self.offered.chunking {
            return self.send_chunked(mail);
        }
        let envelope = match self.ahead.take() {
            Some(id) if id == mail.id => {
                self.await_replies();
                self.read_envelope(mail)?
            }
            Some(_) => {
                // An envelope waits for content that will never come: only closing the
                // connection ends that transaction without delivering an empty message.
                self.broken = true;
                return Err(SmtpError::local(
                    Stage::Sender,
                    "connection abandoned with an open transaction".into(),
                ));
            }
            None if self.offered.pipelining => {
                self.queue_envelope(mail, true);
                self.flush(Stage::Sender)?;
                self.read_envelope(mail)?
            }
            None => self.envelope_step_by_step(mail, true)?,
        };
        let go_ahead = envelope.data.as_ref().is_some_and(|r| r.code == 354);
        if envelope.accepted == 0 || !go_ahead {
            self.needs_reset = true;
            if go_ahead {
                // 354 with no recipient: only closing the connection ends that transaction.
                self.broken = true;
            }
            let data = (envelope.accepted > 0).then(|| {
                Err(envelope.data.map_or_else(
                    || SmtpError::local(Stage::Message, "DATA was not answered".into()),
                    |r| SmtpError::reply(Stage::Message, &r, "message refused"),
                ))
            });
            return Ok(Delivery {
                recipients: envelope.recipients,
                data,
            });
        }
        let recipients = envelope.recipients;
        wire::push_dot_stuffed(self.queue_bytes(), &mail.message);
        if let Some(next) = next.filter(|_| self.offered.pipelining) {
            self.queue_envelope(next, true);
            self.ahead = Some(next.id);
        }
        self.flush(Stage::Message)?;
        let answer = self.read(Stage::Message, "message refused")?;
        Ok(Delivery {
            recipients,
            data: Some(accepted(answer, Stage::Message, "message refused")),
        })
    }

    /// CHUNKING: the message goes as one `BDAT <size> LAST` — not dot-stuffed, framed by its
    /// length — in the same write as the envelope when the server pipelines.
    fn send_chunked(&mut self, mail: &Outbound) -> Result<Delivery, SmtpError> {
        let mut envelope = if self.offered.pipelining {
            self.queue_envelope(mail, false);
            self.queue_bdat(mail);
            self.flush(Stage::Sender)?;
            self.read_envelope(mail)?
        } else {
            self.envelope_step_by_step(mail, false)?
        };
        if envelope.accepted == 0 {
            self.needs_reset = true;
            return Ok(Delivery {
                recipients: envelope.recipients,
                data: None,
            });
        }
        let answer = match envelope.data.take() {
            Some(answer) => answer,
            None => {
                self.queue_bdat(mail);
                self.flush(Stage::Message)?;
                self.read(Stage::Message, "message refused")?
            }
        };
        if !answer.is_positive() {
            self.needs_reset = true;
        }
        Ok(Delivery {
            recipients: envelope.recipients,
            data: Some(accepted(answer, Stage::Message, "message refused")),
        })
    }

    fn queue_bdat(&mut self, mail: &Outbound) {
        self.queue(&format!("BDAT {} LAST", mail.message.len()));
        self.queue_bytes().extend_from_slice(&mail.message);
    }

    fn mail_command(&self, mail: &Outbound) -> String {
        let from = mail
            .from
            .as_ref()
            .map(Address::to_string)
            .unwrap_or_default();
        let mut command = format!("MAIL FROM:<{from}>");
        if self.offered.size {
            command.push_str(&format!(" SIZE={}", mail.message.len()));
        }
        if self.offered.eight_bit_mime && !mail.message.is_ascii() {
            command.push_str(" BODY=8BITMIME");
        }
        let international =
            !from.is_ascii() || mail.to.iter().any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if self.offered.smtputf8 && international {
            command.push_str(" SMTPUTF8");
        }
        command
    }

    /// Queues RSET (after a transaction that did not finish), MAIL, every RCPT and DATA.
    fn queue_envelope(&mut self, mail: &Outbound, data: bool) {
        if self.needs_reset {
            self.queue("RSET");
        }
        let command = self.mail_command(mail);
        self.queue(&command);
        for rcpt in &mail.to {
            self.queue(&format!("RCPT TO:<{rcpt}>"));
        }
        if data {
            self.queue("DATA");
        }
    }

    /// Reads the replies to what `queue_envelope` wrote and to the DATA or BDAT that closed the
    /// group. Every reply is read before a refused sender is returned: the connection stays in
    /// step.
    fn read_envelope(&mut self, mail: &Outbound) -> Result<Envelope, SmtpError> {
        if std::mem::take(&mut self.needs_reset) {
            self.read(Stage::Sender, "RSET")?;
        }
        let sender = self.read(Stage::Sender, "sender refused")?;
        let mut envelope = Envelope {
            recipients: Vec::with_capacity(mail.to.len()),
            accepted: 0,
            data: None,
        };
        for rcpt in &mail.to {
            let reply = self.read(Stage::Recipient, &format!("recipient {rcpt} refused"))?;
            envelope.note(rcpt, reply);
        }
        envelope.data = Some(self.read(Stage::Message, "message refused")?);
        if !sender.is_positive() {
            self.needs_reset = true;
            if envelope.data.as_ref().is_some_and(|r| r.code == 354) {
                self.broken = true;
            }
            return Err(SmtpError::reply(Stage::Sender, &sender, "sender refused"));
        }
        Ok(envelope)
    }

    /// The envelope one command at a time (a server without PIPELINING).
    fn envelope_step_by_step(
        &mut self,
        mail: &Outbound,
        data: bool,
    ) -> Result<Envelope, SmtpError> {
        if std::mem::take(&mut self.needs_reset) {
            self.command(Stage::Sender, "RSET", "RSET")?;
        }
        let command = self.mail_command(mail);
        let sender = self.command(Stage::Sender, &command, "sender refused")?;
        if !sender.is_positive() {
            return Err(SmtpError::reply(Stage::Sender, &sender, "sender refused"));
        }
        let mut envelope = Envelope {
            recipients: Vec::with_capacity(mail.to.len()),
            accepted: 0,
            data: None,
        };
        for rcpt in &mail.to {
            let what = format!("recipient {rcpt} refused");
            let reply = self.command(Stage::Recipient, &format!("RCPT TO:<{rcpt}>"), &what)?;
            envelope.note(rcpt, reply);
        }
        if data && envelope.accepted > 0 {
            envelope.data = Some(self.command(Stage::Message, "DATA", "message refused")?);
        }
        Ok(envelope)
    }

    /// "Test Connection": MAIL FROM and RCPT TO, then RSET; no message is sent.
    pub fn probe(&mut self, from: &Address, rcpt: &Address) -> Result<(), SmtpError> {
        let sender = self.command(
            Stage::Sender,
            &format!("MAIL FROM:<{from}>"),
            "sender refused",
        )?;
        if !sender.is_positive() {
            return Err(SmtpError::reply(Stage::Sender, &sender, "sender refused"));
        }
        let what = format!("recipient {rcpt} refused");
        let reply = self.command(Stage::Recipient, &format!("RCPT TO:<{rcpt}>"), &what)?;
        let _ = self.command(Stage::Sender, "RSET", "RSET");
        if reply.is_positive() {
            Ok(())
        } else {
            Err(SmtpError::reply(Stage::Recipient, &reply, &what))
        }
    }
}

impl Envelope {
    fn note(&mut self, rcpt: &Address, reply: Reply) {
        let result = if reply.is_positive() {
            self.accepted += 1;
            RecipientResult::Accepted
        } else {
            RecipientResult::Refused(SmtpError::reply(
                Stage::Recipient,
                &reply,
                &format!("recipient {rcpt} refused"),
            ))
        };
        self.recipients.push((rcpt.to_string(), result));
    }
}

/// The final answer to a message: its words, or the error.
fn accepted(answer: Reply, stage: Stage, what: &str) -> Result<String, SmtpError> {
    if answer.is_positive() {
        Ok(answer.words())
    } else {
        Err(SmtpError::reply(stage, &answer, what))
    }
}
