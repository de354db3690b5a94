"""Audio Aligner: audio in, the frame-exact master timeline (+ wav2vec2 features) out."""
