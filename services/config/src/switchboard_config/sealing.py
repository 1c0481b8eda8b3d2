"""Encryption at rest for SIP passwords: the employees' (they must be shown again) and the
trunk's (it is sent to the provider), so they cannot be hashed."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

_MARK = "fernet:"


class Sealer:
    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode()) if key else None

    def seal(self, plain: str) -> str:
        if self._fernet is None:
            return plain
        return _MARK + self._fernet.encrypt(plain.encode()).decode()

    def unseal(self, stored: str) -> str:
        if not stored.startswith(_MARK):
            return stored
        if self._fernet is None:
            raise RuntimeError("a sealed SIP password was found but SB_CONFIG_SECRET_KEY is empty")
        try:
            return self._fernet.decrypt(stored[len(_MARK) :].encode()).decode()
        except InvalidToken:
            raise RuntimeError("SB_CONFIG_SECRET_KEY does not open the stored SIP passwords") from None
