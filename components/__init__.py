"""Streamlit custom components of this app, each a plain HTML/JS frontend with no build step."""
