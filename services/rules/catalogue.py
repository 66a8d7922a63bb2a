"""The demo catalogue: a few thousand products that merchandising rules can act on.

Generated, not stored: the same seed always gives the same 3,000 products (ids ``p00001`` …), so
every process and every test sees the same catalogue without a table to load or migrate. It holds
no personal data. A decision without ``candidates`` ranks products from here (see
:meth:`Catalogue.candidates`).
"""

from __future__ import annotations

import random
from typing import Annotated, Final, Literal

import msgspec

from tillit.list_patterns import ListPattern
from tillit.patterns import exact

__all__ = [
    "BRANDS",
    "CATALOGUE_SIZE",
    "DEPARTMENTS",
    "PRODUCT_IDS",
    "Catalogue",
    "Category",
    "Department",
    "Product",
    "demo_catalogue",
]

CATALOGUE_SIZE: Final = 3_000
SEED: Final = 20261124
DEFAULT_CANDIDATES: Final = 200

DEPARTMENTS: Final = ("womens", "mens", "kids", "unisex")
CATEGORIES: Final = {
    "womens": ("dresses", "jeans", "knitwear", "coats", "sneakers", "boots", "bags", "tops"),
    "mens": ("jeans", "shirts", "tailoring", "knitwear", "coats", "sneakers", "boots", "t_shirts"),
    "kids": ("kids_school", "kids_outdoor", "kids_sport", "kids_party", "sneakers"),
    "unisex": ("hoodies", "accessories", "bags", "basics", "sleepwear", "rain_jackets"),
}
Department = Literal["womens", "mens", "kids", "unisex"]
Category = Literal[
    "dresses", "jeans", "knitwear", "coats", "sneakers", "boots", "bags", "tops", "shirts", "tailoring",
    "t_shirts", "kids_school", "kids_outdoor", "kids_sport", "kids_party", "hoodies", "accessories", "basics",
    "sleepwear", "rain_jackets",
]  # fmt: skip
"""The catalogue's departments and categories, as the query filters' published enums."""
BRANDS: Final = (
    "Acne Studios",
    "Filippa K",
    "Marimekko",
    "Gucci",
    "Armani",
    "Levi's",
    "Nudie Jeans",
    "Arket",
    "Fjällräven",
    "Houdini",
    "Norrøna",
    "Samsøe Samsøe",
    "Ganni",
    "Hope",
    "Tiger of Sweden",
    "Polarn O. Pyret",
    "Reima",
    "Veja",
    "Birkenstock",
    "Nordvik Basics",
)
PRICE_BANDS: Final = {"Gucci": (1_800, 9_000), "Armani": (1_200, 6_000)}
TAGS: Final = ("new", "organic", "recycled", "bestseller", "limited", "vegan", "waterproof", "slim", "relaxed")

PRODUCT_ID_PATTERN: Final = exact(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
ProductId = Annotated[str, msgspec.Meta(pattern=PRODUCT_ID_PATTERN)]
PRODUCT_IDS: Final = ListPattern(PRODUCT_ID_PATTERN)
"""A :class:`Product`'s id: a list of candidates holds them all to the pattern at once."""
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Product(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """A candidate product: what rules may read (``product.<attribute>``). Prices in whole SEK.

    ``gc=False``: up to 500 per decision, never part of a reference cycle, so the garbage collector
    need not count or walk them.
    """

    id: Annotated[str, PRODUCT_IDS.meta]
    """Held to the pattern by the Struct with the list (see :data:`PRODUCT_IDS`)."""
    brand: Name
    category: Name
    department: Name
    price: Annotated[float, msgspec.Meta(ge=0, le=10_000_000)]
    on_sale: bool = False
    tags: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=32)]], msgspec.Meta(max_length=20)] = (
        msgspec.field(default_factory=list)
    )


class Catalogue:
    """Products by id, and per department in the catalogue's own (popularity) order."""

    def __init__(self, products: list[Product]) -> None:
        self.products = products
        self.by_id = {product.id: product for product in products}
        self._by_department: dict[str, list[Product]] = {}
        for product in products:
            self._by_department.setdefault(product.department, []).append(product)

    def candidates(
        self, department: str | None = None, category: str | None = None, limit: int = DEFAULT_CANDIDATES
    ) -> list[Product]:
        """The first ``limit`` products, of ``department`` and ``category`` when given."""
        pool = self._by_department.get(department, []) if department else self.products
        chosen = [p for p in pool if category is None or p.category == category] if category else pool
        return chosen[:limit]


def demo_catalogue(size: int = CATALOGUE_SIZE, seed: int = SEED) -> Catalogue:
    """The deterministic demo catalogue (about a third of it on sale)."""
    rng = random.Random(seed)  # noqa: S311 - demo data, reproducible on purpose
    products = []
    for number in range(1, size + 1):
        department = rng.choice(DEPARTMENTS)
        brand = rng.choice(BRANDS)
        low, high = PRICE_BANDS.get(brand, (149, 2_499))
        full_price = rng.randrange(low, high, 50) - 1
        on_sale = rng.random() < 0.35
        price = round(full_price * rng.choice((0.5, 0.6, 0.7, 0.8))) if on_sale else full_price
        products.append(
            Product(
                id=f"p{number:05d}",
                brand=brand,
                category=rng.choice(CATEGORIES[department]),
                department=department,
                price=float(price),
                on_sale=on_sale,
                tags=sorted(rng.sample(TAGS, rng.randrange(0, 4))),
            )
        )
    return Catalogue(products)
