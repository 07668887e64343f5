"""Scripted English lines spoken by the synthetic actors of the mini IEMOCAP corpus.

The sentences are deliberately emotion-neutral in wording: any of them can be said angrily, happily,
sadly or flatly, so the only cue a classifier can learn from the synthetic corpus is prosody, never
the words. They are short (5 to 10 words) so that one spoken turn lasts about 1.5 to 4 seconds at
every speaking rate the generator uses. A few contain digits ("20", "7") because real transcripts do,
and the G2P stage downstream must expand numbers.

Besides full sentences the module holds the short fillers used for the corpus' irregular lines:
turns without a label (the ``XX`` turns), transcript lines without an id or time (``M: Yeah.``) and
the noise tags that real IEMOCAP transcripts carry inside the text.
"""
from __future__ import annotations

import re

SENTENCES: tuple[str, ...] = (
    "Excuse me, is this the line for new licenses?",
    "I have been waiting here for 20 minutes.",
    "You said you would call me back yesterday.",
    "We are moving to the coast in June.",
    "The letter from the university came this morning.",
    "Why didn't you tell me about it before?",
    "She left the car keys on the kitchen table.",
    "The train to the city leaves at 7.",
    "I think we should talk about this tonight.",
    "My brother is coming to visit next week.",
    "They changed the rules again without asking anyone.",
    "Do you remember the house by the lake?",
    "He finally finished the painting in the hallway.",
    "There are 3 messages waiting on the machine.",
    "I found your old photographs in the attic.",
    "The doctor wants to see me on Monday.",
    "We only have 2 days left before the wedding.",
    "You never listen to a word I say.",
    "Somebody moved all of my papers from the desk.",
    "I can't believe it is already December.",
    "The restaurant on the corner closed last month.",
    "Let's just wait and see what happens.",
    "I have been thinking about what you said.",
    "The flight was delayed for another hour.",
    "Your mother called while you were out.",
    "I bought tickets for the concert on Friday.",
    "Nobody told me the meeting was cancelled.",
    "We drove all night to get here in time.",
    "It has been 10 years since we last met.",
    "The dog is sleeping under the stairs again.",
    "I don't know what you want me to do.",
    "They offered me the job this afternoon.",
    "Please put the boxes next to the door.",
    "He told me the whole story on the phone.",
    "I will be there in 15 minutes.",
    "The garden looks different after the rain.",
    "Are you really going to leave tomorrow?",
    "She wrote back to me after all this time.",
    "We need to find a new place to live.",
    "That is exactly what I was afraid of.",
    "I am not going back to that office.",
    "You could have told me the truth from the start.",
)
"""Lines the actors speak in labelled turns (a few dozen, varied, emotion-neutral wording)."""

FILLERS: tuple[str, ...] = (
    "Yeah.",
    "Okay.",
    "Mm-hmm.",
    "Right.",
    "Oh, well.",
    "Sure, sure.",
    "No.",
    "What?",
)
"""Short back-channel words, used for unlabelled (``XX``) turns and for odd transcript lines."""

NOISE_TAGS: tuple[str, ...] = ("[LAUGHTER]", "[BREATHING]", "[GARBAGE]")
"""Non-speech events marked inside IEMOCAP transcripts."""

_TAG = re.compile(r"\[[A-Z]+\]")


def strip_noise_tags(text: str) -> str:
    """Remove ``[LAUGHTER]``-style tags and tidy spaces, giving the words a synthesiser should say.

    The transcript keeps the tags (as the real corpus does); only the speech engine must not read
    them out as words.
    """
    return " ".join(_TAG.sub(" ", text).split())
