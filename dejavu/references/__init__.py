"""One-model references: estimators of what dataset-level correlations alone reveal (SPEC sections 4-5).

Each yields a `ReferencePrediction` per record id: naive Bayes over background tags, a crop
classifier trained on background crops, and (for the vision-language test) a text-only sentence
encoder used for caption-to-caption retrieval.
"""

from dejavu.references.crop_classifier import CropClassifier, SmallCNN, build_network
from dejavu.references.naive_bayes import NaiveBayesReference
from dejavu.references.prediction import ReferencePrediction
from dejavu.references.tags import Tagger, crop_box, crop_tags, foreground_boxes, top_tags
from dejavu.references.text_model import SentenceTextEncoder

__all__ = [
    "CropClassifier",
    "NaiveBayesReference",
    "ReferencePrediction",
    "SentenceTextEncoder",
    "SmallCNN",
    "Tagger",
    "build_network",
    "crop_box",
    "crop_tags",
    "foreground_boxes",
    "top_tags",
]
