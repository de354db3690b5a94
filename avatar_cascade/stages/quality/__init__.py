"""Quality report of any video + audio against a reference image (see :mod:`.report`)."""
