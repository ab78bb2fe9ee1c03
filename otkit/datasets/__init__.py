"""Distances between labelled datasets: OTDD and per-class statistics."""

from otkit.datasets._otdd import OTDDOutput, otdd
from otkit.datasets._statistics import ClassStatistics, class_statistics

__all__ = ["ClassStatistics", "OTDDOutput", "class_statistics", "otdd"]
