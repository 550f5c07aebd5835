"""Stock conversion: the cities' local health certificates to home-province codes, in batches
(docs/stock-conversion.md)."""
