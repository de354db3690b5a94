"""Clip Stitcher: join the clips, blend seams, match colour, mux the audio, stream to a video file."""
