"""The shopper's preference pages (Jinja2 + htmx). Holds no personal data; calls only the gateway."""
