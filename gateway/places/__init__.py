"""Place codes (场所码): venues, the codes they display, the visits checkpoints record with them,
and the tracing queries over those visits (docs/operations.md, "Venues and place codes";
docs/api.md, "Place codes and visits", "TracingService"; docs/verifying.md, "Place codes")."""
