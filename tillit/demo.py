"""Demo data for ``tillit up``: channel clients, a handful of shoppers, their consents.

Seeded once per data directory; the demo client credentials are kept in ``demo-credentials.json``
there so that every later ``tillit up`` can print them again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import httpx
import msgspec

from gateway.app import MIGRATIONS
from gateway.clients import ClientService, IssuedCredentials
from gateway.repository import ClientRepository
from tillit.db import Database
from tillit.keys import SERVICE_TOKEN_KEY, load_private_key
from tillit.migrations import upgrade_to_head
from tillit.policy import load_policy
from tillit.service_tokens import ServiceTokenIssuer
from tillit.settings import Settings

__all__ = ["DEMO_CLIENTS", "DEMO_SHOPPERS", "create_client", "seed_demo"]

DEMO_CLIENTS: Final = {
    "email": ["profiles:read", "consents:write", "webhooks:manage"],
    "sms": ["profiles:read", "consents:write", "webhooks:manage"],
    "web": ["profiles:read", "decisions:read", "consents:write"],
    "ads": ["profiles:read", "audiences:read"],
}

DEMO_SHOPPERS: Final[dict[str, dict[str, Any]]] = {
    "shopper-astrid": {
        "profile": {
            "email": "astrid.lind@example.com",
            "first_name": "Astrid",
            "preferred_language": "sv",
            "shoe_size": 38,
            "clothing_size": "S",
            "sizes": {"tops": "S", "bottoms": 27, "dresses": 36, "knitwear": "S", "shoes": 38},
            "favourite_categories": ["dresses", "knitwear"],
            "favourite_brands": ["Filippa K", "Acne Studios"],
            "topics": ["new-arrivals"],
            "price_range": {"min": 300, "max": 2500, "currency": "SEK"},
            "contact_frequency": {"email": "weekly"},
        },
        "consents": [("marketing.communications.email", "give"), ("personalize.content.profiled", "give")],
    },
    "shopper-lars": {
        "profile": {
            "email": "lars.haugen@example.com",
            "phone": "+4791234567",
            "first_name": "Lars",
            "preferred_language": "nb",
            "shoe_size": 44,
            "sizes": {"tops": "L", "bottoms": 34, "outerwear": "L", "shoes": 44},
            "favourite_categories": ["outdoor", "running"],
            "topics": ["outdoor-guides"],
            "price_range": {"min": 500, "max": 4000, "currency": "NOK"},
            "contact_frequency": {"email": "monthly", "sms": "monthly"},
        },
        "consents": [("marketing.communications.email", "give"), ("marketing.communications.sms", "give")],
    },
    "shopper-kadri": {
        "profile": {
            "email": "kadri.tamm@example.com",
            "first_name": "Kadri",
            "preferred_language": "et",
            "clothing_size": "M",
            "sizes": {"tops": "M", "dresses": 38, "shoes": 39.5},
            "favourite_brands": ["Marimekko"],
            "price_range": {"min": 30, "max": 250, "currency": "EUR"},
        },
        "consents": [
            ("marketing.communications.email", "give"),
            ("marketing.communications.email", "withdraw"),
            ("personalize.content.profiled", "give"),
        ],
    },
    "shopper-sam": {
        "profile": {"email": "sam.taylor@example.com", "first_name": "Sam", "preferred_language": "en"},
        "consents": [],
    },
    "shopper-mia": {
        "profile": {
            "email": "mia.virtanen@example.com",
            "first_name": "Mia",
            "preferred_language": "en",
            "favourite_categories": ["sneakers"],
            "sizes": {"shoes": 40.5},
        },
        "consents": [("marketing.advertising.third_party.targeted", "give")],
    },
}


async def create_client(
    gateway: Settings, channel: str, scopes: list[str], client_id: str | None = None
) -> IssuedCredentials:
    """Create a channel client straight in the gateway's database, migrating it first if needed."""
    database = Database(gateway.database_url, gateway.database_schema)
    try:
        await upgrade_to_head(database, MIGRATIONS)
        async with database.sessionmaker() as session, session.begin():
            service = ClientService(ClientRepository(session), load_policy(gateway.policy_dir))
            return await service.create(channel, scopes, client_id=client_id)
    finally:
        await database.dispose()


def credentials_path(data_dir: Path) -> Path:
    return data_dir / "demo-credentials.json"


async def seed_demo(settings: dict[str, Settings]) -> list[IssuedCredentials]:
    """Seed once; on later runs just read back the demo credentials."""
    gateway = settings["gateway"]
    path = credentials_path(gateway.data_dir)
    if path.exists():
        return msgspec.json.decode(path.read_bytes(), type=list[IssuedCredentials])
    issuer = ServiceTokenIssuer(load_private_key(gateway.keys_dir, SERVICE_TOKEN_KEY))
    async with httpx.AsyncClient(timeout=10.0) as client:
        for subject_id, shopper in DEMO_SHOPPERS.items():
            response = await client.patch(
                f"{gateway.url_of('preferences')}/v1/subjects/{subject_id}/profile",
                json={"fields": shopper["profile"], "source": "import"},
                headers=issuer.headers_for("preferences"),
            )
            response.raise_for_status()
            for purpose, action in shopper["consents"]:
                response = await client.post(
                    f"{gateway.url_of('consent')}/v1/subjects/{subject_id}/events",
                    json={"purpose": purpose, "action": action, "source": "import"},
                    headers=issuer.headers_for("consent"),
                )
                response.raise_for_status()
    credentials = [
        await create_client(gateway, channel, scopes, client_id=f"demo-{channel}")
        for channel, scopes in DEMO_CLIENTS.items()
    ]
    path.write_bytes(msgspec.json.format(msgspec.json.encode(credentials)))
    path.chmod(0o600)
    return credentials
