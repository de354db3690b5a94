"""The six stages of the cascade plus in-betweening, one package each; no stage imports another."""
