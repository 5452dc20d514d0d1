"""Personal data: pseudonymization at ingest, erasure and export of a subject.

`pseudonymize` hashes person columns as the sources are read. `forget` erases an
account or a person from the snapshots, the output folders and the operational store,
and `export_subject` collects what is held about one for an access request.
"""

from healthscore.privacy.erase import ErasureReport, forget
from healthscore.privacy.export import export_subject, write_export
from healthscore.privacy.pseudonymize import PrivacyError, pseudonym, read_key
from healthscore.privacy.subjects import (
    ERASED,
    Subject,
    account_subject,
    person_subject,
    subject_hash,
)

__all__ = [
    "ERASED",
    "ErasureReport",
    "PrivacyError",
    "Subject",
    "account_subject",
    "export_subject",
    "forget",
    "person_subject",
    "pseudonym",
    "read_key",
    "subject_hash",
    "write_export",
]
