"""The stable action codes of the audit log (``AuditEntry.action``).

A code is ``<noun>.<verb>``; it names what was attempted, never what was said. Adding one is a
code change here (no migration): ``services.record`` refuses codes not listed.
"""

from __future__ import annotations

# Sign-in and authorization
AUTH_SIGNIN = "auth.signin"  # a socket authenticated (ok) or a token was refused (denied)
AUTH_REGISTER = "auth.register"  # REST registration (first sign-in of a phone number)
AUTHZ_DENIED = "authz.denied"  # a REST 403/404 or a socket forbidden/not-found error frame

# Reads of health data
CONVERSATION_LIST = "conversation.list"
CONVERSATION_READ = "conversation.read"
HISTORY_READ = "history.read"  # REST message history page
HISTORY_SYNC = "history.sync"  # one socket ``sync`` request (not one row per message)
MENTION_LIST = "mention.list"  # a REST page of "mentions of me" (messages' content)
MESSAGE_VERSIONS_READ = "message_versions.read"  # a message's edit history (its earlier texts)
ATTACHMENT_LINK = "attachment.link"  # a download URL was issued
ATTACHMENT_DOWNLOAD = "attachment.download"  # the bytes were streamed by this server
CALL_LIST = "call.list"  # a REST page of the caller's call history
CALL_READ = "call.read"  # one call's record (participants, times, state)
MESSAGE_SEARCH = "message.search"  # one full-text search (never its words)
APPOINTMENT_LIST = "appointment.list"  # a REST page of the caller's appointments
APPOINTMENT_READ = "appointment.read"  # one appointment (its times, state, log)
APPOINTMENT_ICS = "appointment.ics"  # one appointment's iCalendar file
CALENDAR_FEED_READ = "calendar_feed.read"  # a doctor's private feed fetched (the token's holder)
ON_DEMAND_LIST = "on_demand.list"  # a doctor's list of open on-demand requests (specialties)
ON_DEMAND_READ = "on_demand.read"  # one on-demand request
DOCUMENT_REQUEST = "document.request"  # a PDF (receipt, summary, prescription) asked for
DOCUMENT_LIST = "document.list"  # a REST page of the caller's documents
DOCUMENT_LINK = "document.link"  # one document's state and, when ready, a download URL
DOCUMENT_DOWNLOAD = "document.download"  # the PDF was streamed by this server

# The clinical record (records/; docs/record.md): every read of a note or a prescription, and
# every write (object: the note or the prescription; never its text)
VISIT_NOTE_LIST = "visit_note.list"  # a consultation's notes listed (REST)
VISIT_NOTE_READ = "visit_note.read"  # one note with its amendments (REST, or the admin: admin.view)
VISIT_NOTE_WRITE = "visit_note.write"  # a draft created or changed
VISIT_NOTE_DELETE = "visit_note.delete"  # a draft discarded
VISIT_NOTE_SIGN = "visit_note.sign"
VISIT_NOTE_SHARE = "visit_note.share"  # the patient may read it from now on
VISIT_NOTE_AMEND = "visit_note.amend"  # an amendment appended to a signed note
PRESCRIPTION_LIST = "prescription.list"  # a REST page of the caller's prescriptions
PRESCRIPTION_READ = "prescription.read"
PRESCRIPTION_ISSUE = "prescription.issue"
PRESCRIPTION_CANCEL = "prescription.cancel"
PRESCRIPTION_VERIFY = "prescription.verify"  # the public check answered (no caller; the client address)

# The account holder's rights
USER_EXPORT = "user.export"
USER_DELETE = "user.delete"

# Account safety (staff or an operator; docs/trust.md "Session safety")
USER_DEACTIVATE = "user.deactivate"
USER_REACTIVATE = "user.reactivate"
USER_SIGNOUT = "user.signout"  # Firebase refresh tokens revoked, sockets closed
# A device registration took an installation id or FCM token from another account's device
# (object: the device that lost it; code: which identifier). That device gets no more pushes.
DEVICE_SUPERSEDED = "device.superseded"

# Staff
ADMIN_VIEW = "admin.view"  # a changelist or change page of health data was shown
ADMIN_CHANGE = "admin.change"  # a change form of health data was saved
LEGAL_HOLD_SET = "legal_hold.set"
LEGAL_HOLD_RELEASE = "legal_hold.release"
DOCTOR_VERIFY = "doctor.verify"  # a doctor's credentials accepted (admin action, ``verify_doctor``)
DOCTOR_REJECT = "doctor.reject"
APPOINTMENT_STAFF_CANCEL = "appointment.staff_cancel"  # admin: cancelled, authorisation released
APPOINTMENT_STAFF_NO_SHOW = "appointment.staff_no_show"  # admin: marked a doctor no-show
APPOINTMENT_STAFF_RELEASE = "appointment.staff_release"  # admin: a stuck hold released
REVIEW_HIDE = "review.hide"  # admin: a patient's review hidden (code: the reason code)
REVIEW_SHOW = "review.show"  # admin: a hidden review shown again
DOCUMENT_REGENERATE = "document.regenerate"  # admin: a document queued for rendering again
REPORT_ASSIGN = "report.assign"  # a moderator took a report (moderation)
REPORT_RESOLVE = "report.resolve"  # a report resolved (code: warn, mute, deactivate or dismiss)

# The system itself
RETENTION_PURGE = "retention.purge"  # a retention run erased something (no counts, no ids)

ACTIONS: frozenset[str] = frozenset(
    {
        AUTH_SIGNIN,
        AUTH_REGISTER,
        AUTHZ_DENIED,
        CONVERSATION_LIST,
        CONVERSATION_READ,
        HISTORY_READ,
        HISTORY_SYNC,
        MENTION_LIST,
        MESSAGE_VERSIONS_READ,
        ATTACHMENT_LINK,
        ATTACHMENT_DOWNLOAD,
        DOCUMENT_REQUEST,
        DOCUMENT_LIST,
        DOCUMENT_LINK,
        DOCUMENT_DOWNLOAD,
        CALL_LIST,
        CALL_READ,
        MESSAGE_SEARCH,
        APPOINTMENT_LIST,
        APPOINTMENT_READ,
        APPOINTMENT_ICS,
        CALENDAR_FEED_READ,
        ON_DEMAND_LIST,
        ON_DEMAND_READ,
        VISIT_NOTE_LIST,
        VISIT_NOTE_READ,
        VISIT_NOTE_WRITE,
        VISIT_NOTE_DELETE,
        VISIT_NOTE_SIGN,
        VISIT_NOTE_SHARE,
        VISIT_NOTE_AMEND,
        PRESCRIPTION_LIST,
        PRESCRIPTION_READ,
        PRESCRIPTION_ISSUE,
        PRESCRIPTION_CANCEL,
        PRESCRIPTION_VERIFY,
        USER_EXPORT,
        USER_DELETE,
        USER_DEACTIVATE,
        USER_REACTIVATE,
        USER_SIGNOUT,
        DEVICE_SUPERSEDED,
        ADMIN_VIEW,
        ADMIN_CHANGE,
        LEGAL_HOLD_SET,
        LEGAL_HOLD_RELEASE,
        DOCTOR_VERIFY,
        DOCTOR_REJECT,
        APPOINTMENT_STAFF_CANCEL,
        APPOINTMENT_STAFF_NO_SHOW,
        APPOINTMENT_STAFF_RELEASE,
        REVIEW_HIDE,
        REVIEW_SHOW,
        DOCUMENT_REGENERATE,
        REPORT_ASSIGN,
        REPORT_RESOLVE,
        RETENTION_PURGE,
    }
)
