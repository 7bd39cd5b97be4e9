"""The scene types a recording can have (``recordings.csv`` ``scene``, ``gasdb add --scene``).

A vocabulary of its own so that the workspace and the algorithms (the rig simulator labels its
recordings with it) share it without either importing the other.
"""

__all__ = ["SCENES"]

#: Scene types of Gas-DB (RT-CAN paper, Sec. 4) plus ``other``; recordings may add free tags.
SCENES = (
    "sunny",
    "rainy",
    "overcast",
    "double-leak",
    "near",
    "far",
    "overlook",
    "simple-background",
    "complex-background",
    "other",
)
