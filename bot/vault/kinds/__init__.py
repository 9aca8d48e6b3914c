"""One strategy module per grant kind (``bot.domain.grant_kinds``), and the registry of them."""
