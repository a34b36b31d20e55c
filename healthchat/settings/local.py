"""Development settings: embedded defaults, DEBUG on, development sign-in tokens allowed."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
FIREBASE_DEV_TOKENS = env.bool("FIREBASE_DEV_TOKENS", default=True)
