"""Provider pools: one actor per LM endpoint (``provider_pool``) and the client side that
routes a driver's or worker's requests to it (``pool_client``)."""
