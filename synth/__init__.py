"""SPMS synthesis stages (stage-1 InfU generation, LoRAs, face swap, ID filter)."""
