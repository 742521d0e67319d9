"""OIDC / JWT bearer tokens: signature checked against a JWKS file, then `iss`, `aud` and `exp`.

Only asymmetric algorithms are accepted (a JWKS holds public keys; `none` and HMAC never verify). The
identity is the `sub` claim; roles come from one claim (a list, or a space- or comma-separated
string), unknown role names ignored. PyJWT is imported only when a JWKS file is configured.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bobench.errors import InvalidArgument, Unauthenticated, Unavailable
from bobench.rpc.auth_tokens import ROLES, Identity, ReloadingFile

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


def _load_jwks(path: Path) -> Any:
    import jwt

    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InvalidArgument(f"JWKS file {path}: cannot be read ({exc.strerror})") from None
    except json.JSONDecodeError:
        raise InvalidArgument(f"JWKS file {path}: not JSON") from None
    try:
        return jwt.PyJWKSet.from_dict(data)
    except (jwt.PyJWKError, jwt.PyJWKSetError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"JWKS file {path}: no usable key ({type(exc).__name__})") from None


class JwtVerifier:
    """Verifies JWTs against the keys of a JWKS file (re-read when it changes)."""

    def __init__(self, jwks_file: str | Path, issuer: str, audience: str, roles_claim: str = "roles") -> None:
        try:
            import jwt  # noqa: F401
        except ImportError:
            raise Unavailable(
                "auth_jwks_file is set but PyJWT is not installed (pip install 'pyjwt[crypto]')"
            ) from None
        if not issuer or not audience:
            raise InvalidArgument("auth_jwks_file needs auth_jwt_issuer and auth_jwt_audience as well")
        self.issuer, self.audience, self.roles_claim = issuer, audience, roles_claim or "roles"
        self._jwks = ReloadingFile(jwks_file, _load_jwks)

    def _key(self, token: str) -> tuple[Any, str]:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("bearer token: not a valid JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise Unauthenticated(f"bearer token: JWT algorithm {alg!r} is not accepted")
        keys = [k for k in self._jwks.get().keys if kid is None or k.key_id == kid]
        if not keys:
            raise Unauthenticated("bearer token: JWT signed by a key that is not in the JWKS")
        return keys[0].key, alg

    def verify(self, token: str) -> Identity:
        """The identity of a valid token; Unauthenticated says which check failed."""
        import jwt

        key, alg = self._key(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("bearer token: JWT expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(f"bearer token: JWT audience is not {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(f"bearer token: JWT issuer is not {self.issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("bearer token: JWT signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"bearer token: JWT rejected ({type(exc).__name__})") from None
        raw = claims.get(self.roles_claim, [])
        items = re.split(r"[\s,]+", raw) if isinstance(raw, str) else raw if isinstance(raw, list) else []
        roles = frozenset(r for r in items if r in ROLES)
        return Identity(str(claims["sub"]), roles)
