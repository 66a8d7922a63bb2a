"""Words for the codes the pages show (field names, sizes, categories...), translated one at a time.

Each English text is marked with :func:`N_` so that ``pybabel extract -k N_`` finds it; the template
function ``label(kind, code)`` translates only the one asked for (unknown codes are shown as they are).
"""

from __future__ import annotations

from typing import Final

__all__ = ["LABELS", "N_"]


def N_(message: str) -> str:  # noqa: N802 - the gettext convention for "translate later"
    return message


_CATEGORIES: Final = {
    "dresses": N_("Dresses"),
    "knitwear": N_("Knitwear"),
    "jeans": N_("Jeans"),
    "shirts": N_("Shirts"),
    "outerwear": N_("Outerwear"),
    "outdoor": N_("Outdoor"),
    "running": N_("Running"),
    "sneakers": N_("Sneakers"),
    "accessories": N_("Accessories"),
    "kidswear": N_("Kidswear"),
    "new-arrivals": N_("New arrivals"),
    "sale": N_("Sales and offers"),
    "style-tips": N_("Style tips"),
    "outdoor-guides": N_("Outdoor guides"),
    "sustainability": N_("Sustainability"),
}

LABELS: Final[dict[str, dict[str, str]]] = {
    "field": {
        "first_name": N_("First name"),
        "email": N_("E-mail address"),
        "phone": N_("Phone number"),
        "preferred_language": N_("Language"),
        "sizes": N_("Sizes"),
        "shoe_size": N_("Shoe size"),
        "clothing_size": N_("Clothing size"),
        "favourite_categories": N_("Favourite categories"),
        "favourite_brands": N_("Favourite brands"),
        "price_range": N_("Price range"),
        "topics": N_("Topics"),
        "contact_frequency": N_("How often we may contact you"),
        "style": N_("Your style (from the quiz)"),
        "department": N_("Department you shop in (from the quiz)"),
        "colour_palette": N_("Colours you like (from the quiz)"),
        "fit_preference": N_("Fit you prefer (from the quiz)"),
        "price_sensitivity": N_("How much price matters to you (from the quiz)"),
        "recommended_categories": N_("Categories suggested for you (from the quiz)"),
    },
    "size": {
        "tops": N_("Tops"),
        "bottoms": N_("Trousers and jeans"),
        "dresses": N_("Dresses"),
        "outerwear": N_("Outerwear"),
        "knitwear": N_("Knitwear"),
        "shoes": N_("Shoes"),
    },
    "frequency": {
        "daily": N_("Daily"),
        "weekly": N_("Weekly"),
        "fortnightly": N_("Every other week"),
        "monthly": N_("Monthly"),
        "quarterly": N_("Every three months"),
    },
    "channel": {"email": N_("E-mail"), "sms": N_("Text messages")},
    "category": _CATEGORIES,
    "action": {
        "given": N_("You said yes"),
        "refused": N_("You said no"),
        "withdrawn": N_("You withdrew"),
        "expired": N_("Ran out"),
        "pending": N_("Waiting for your confirmation"),
        "confirmed": N_("You confirmed"),
    },
    "request": {
        "received": N_("received"),
        "verified": N_("verified"),
        "in_progress": N_("in progress"),
        "completed": N_("completed"),
        "rejected": N_("rejected"),
    },
}
