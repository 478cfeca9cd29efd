"""Synthetic talker (data with exact ground truth), speech alignment, face morphs; imports media, common."""
