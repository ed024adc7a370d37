"""Real-data curation: dataset sources, safe decode, filters, dedup, buckets."""
