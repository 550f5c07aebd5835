"""The three envelope families shared by all regions: compact Ed25519, JWS and COSE_Sign1."""
