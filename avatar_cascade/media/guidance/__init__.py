"""Guidance from what artists have, with no weights: OpenPose / DWPose skeletons from keypoint JSON
(:mod:`.pose`), 2D bone-length retargeting to a reference's proportions (:mod:`.retarget`), XDoG line
art (:mod:`.lineart`) and layer compositing into one VACE control video (:mod:`.composite`). Depth,
normal and semantic maps come in as IMAGE from any ComfyUI preprocessor."""
