"""Data subjects (an account or a person) and how rows that concern them are found.

An account is found by its ``account_id``. A person is found by identifier or email
anywhere in text: as a whole cell and as a whole word inside free text such as a
note or an override reason, in state tables, snapshot tables and JSON documents. With
pseudonymization on, the person's pseudonym is looked for as well, because the
sources contributed pseudonyms while people typed raw names into the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import JSON, Column

from healthscore.config import Project
from healthscore.privacy.pseudonymize import (
    PrivacyError,
    exact_pseudonym,
    pseudonym,
    read_key,
)

SubjectKind = Literal["account", "person"]

#: Value that replaces a person's identifier when the person is forgotten.
ERASED = "[erased]"

#: JSON keys whose value is an account id.
ACCOUNT_KEYS = frozenset({"account_id"})


@dataclass(frozen=True)
class Subject:
    """The account or person whose data is erased or exported.

    Attributes
    ----------
    kind : {"account", "person"}
        What the identifier names.
    identifier : str
        Account id, or a person's identifier or email as given.
    pseudonyms : tuple of str
        The person's pseudonyms under the project's key; empty without
        pseudonymization and for accounts.
    """

    kind: SubjectKind
    identifier: str
    pseudonyms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.identifier.strip():
            raise ValueError(
                f"the {self.kind} identifier is empty; give the account id, or the "
                "person's identifier or email"
            )

    @property
    def is_email(self) -> bool:
        """Whether the identifier is an email address, compared case-insensitively."""
        return "@" in self.identifier

    @property
    def values(self) -> tuple[str, ...]:
        """Exact values that stand for the subject: the identifier and pseudonyms."""
        return (self.identifier, *self.pseudonyms)

    def matches(self, value: object) -> bool:
        """Return whether `value` is the identifier or one of the pseudonyms."""
        if not isinstance(value, str):
            return False
        if value in self.values:
            return True
        return self.is_email and value.casefold() == self.identifier.casefold()

    @cached_property
    def mention_pattern(self) -> re.Pattern[str]:
        """Regular expression of the identifier or a pseudonym as a whole word.

        A neighbouring letter, digit, ``_``, ``@`` or ``-`` (or a ``.`` before it)
        makes a longer word, so ``A0004`` is not found in ``A00041`` and
        ``jane@example.com`` not in ``mary.jane@example.com``. Emails match in any
        letter case.
        """
        longest_first = sorted(set(self.values), key=len, reverse=True)
        alternatives = "|".join(re.escape(value) for value in longest_first)
        flags = re.IGNORECASE if self.is_email else 0
        return re.compile(rf"(?<![\w.@-])(?:{alternatives})(?![\w@-])", flags)

    def mentioned_in(self, value: object) -> bool:
        """Return whether `value` is text that contains the subject as a whole word."""
        if not isinstance(value, str):
            return False
        return self.matches(value) or self.mention_pattern.search(value) is not None

    def redact_text(self, value: str) -> str:
        """Return `value` with every mention of the subject replaced by ERASED."""
        if self.matches(value):
            return ERASED
        return self.mention_pattern.sub(ERASED, value)


def account_subject(account_id: str) -> Subject:
    """Return the subject for an account id."""
    return Subject("account", account_id)


def person_subject(project: Project, identifier: str) -> Subject:
    """Return the subject for a person, with pseudonyms when the project uses them.

    An email's first pseudonym is that of its case-folded form, which every spelling
    of the address gets. Pseudonyms stored before emails were case-folded are
    hashes of the address as it was spelt, so the address as given, in lower case
    and in upper case is hashed as well. Other old spellings, such as
    ``Jane.Doe@Example.com`` for ``jane.doe@example.com``, are found only when
    that spelling is given.

    Raises
    ------
    PrivacyError
        When pseudonymization is on and its key cannot be read.
    """
    settings = project.config.privacy.pseudonymize
    if settings is None:
        return Subject("person", identifier)
    key = read_key(project, settings)
    pseudonyms = [pseudonym(identifier, key)]
    if "@" in identifier:
        spellings = (identifier, identifier.lower(), identifier.upper())
        pseudonyms += [exact_pseudonym(spelling, key) for spelling in spellings]
    return Subject("person", identifier, tuple(dict.fromkeys(pseudonyms)))


# Columns and documents


def is_json_column(column: Column[Any]) -> bool:
    """Tell whether a column contains JSON documents."""
    return isinstance(column.type, JSON)


def document_mentions(document: Any, subject: Subject) -> bool:
    """Return whether a JSON document refers to the subject.

    An account is referred to by an ``account_id`` key at any depth, a person by
    any string value that contains the identifier or a pseudonym as a whole word.
    """
    if isinstance(document, dict):
        for key, value in document.items():
            if subject.kind == "account" and key in ACCOUNT_KEYS:
                if subject.matches(value):
                    return True
            elif document_mentions(value, subject):
                return True
        return False
    if isinstance(document, list):
        return any(document_mentions(item, subject) for item in document)
    return subject.kind == "person" and subject.mentioned_in(document)


def text_mentions(document: Any, subject: Subject) -> bool:
    """Return whether any string in a JSON document mentions the subject."""
    if isinstance(document, dict):
        return any(text_mentions(value, subject) for value in document.values())
    if isinstance(document, list):
        return any(text_mentions(item, subject) for item in document)
    return subject.mentioned_in(document)


def mention_paths(document: Any, subject: Subject, path: str = "") -> Counter[str]:
    """Count the strings of a JSON document that mention the subject, per key path.

    A key path joins the object keys from the top with dots, as ``detail.reason``.
    A list item has the path of its list, so the records of a table export give
    their column names. `path` is the path of `document` itself.
    """
    found: Counter[str] = Counter()
    if isinstance(document, dict):
        for key, value in document.items():
            key_path = f"{path}.{key}" if path else str(key)
            found += mention_paths(value, subject, key_path)
    elif isinstance(document, list):
        for item in document:
            found += mention_paths(item, subject, path)
    elif subject.mentioned_in(document):
        found[path] += 1
    return found


def redact_document(document: Any, subject: Subject) -> Any:
    """Return a copy of a JSON document with every mention of `subject` erased.

    A string equal to the subject becomes ERASED, and a mention inside a longer
    string is replaced by ERASED (see `Subject.redact_text`). Keys are kept.
    """
    if isinstance(document, dict):
        return {key: redact_document(value, subject) for key, value in document.items()}
    if isinstance(document, list):
        return [redact_document(item, subject) for item in document]
    return subject.redact_text(document) if isinstance(document, str) else document


# Audit hashes


def subject_hash(project: Project, subject: Subject) -> str:
    """Return the keyed hash recorded in the audit log in place of the subject.

    It is the hex HMAC-SHA256 of ``<kind>:<identifier>`` under the audit key, so
    someone holding the key can check whether a given subject was erased, while the
    audit log alone does not reveal who was.
    """
    key = audit_key(project)
    message = f"{subject.kind}:{subject.identifier}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def audit_key(project: Project) -> bytes:
    """Read the audit key file, creating it with 32 random bytes when it is missing.

    Raises
    ------
    PrivacyError
        When the file exists but cannot be read or is empty.
    """
    path = project.path(project.config.privacy.audit_key_file)
    if not path.exists():
        _create_key_file(path)
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise PrivacyError(
            f"the audit key file {path} cannot be read: {exc.strerror}; fix its "
            "permissions or privacy.audit_key_file"
        ) from None
    if not key:
        raise PrivacyError(
            f"the audit key file {path} is empty; delete it so that a new key is "
            "created, or write a long random secret into it"
        )
    return key


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The key is written in full under a temporary name and then linked into place,
    # so a process that starts at the same moment never reads a half-written key and
    # the first key linked is the one every process keeps.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink()
