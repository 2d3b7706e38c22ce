"""ViT Digits Streamlit app (placeholder until the app issue lands)."""

import streamlit as st

st.title("ViT Digits")
st.info("The drawing app is not built yet: see README.md for the training pipeline.")
