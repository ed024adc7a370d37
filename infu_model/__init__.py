"""InfU model: projection network, InfuseNet wiring, inference pipeline and training losses."""
