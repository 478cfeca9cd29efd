"""The embedded tier's motion space: tracker, PCA motions, photo renderer, mouth layer; imports media, common."""
