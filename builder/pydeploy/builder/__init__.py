"""The builder stage: builder images, venv volumes, the app check, credentials, and
transcripts of what the containers said."""
