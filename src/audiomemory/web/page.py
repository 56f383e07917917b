"""The page's components, laid out: the form on the left (the reel's own settings in an accordion), the job and
its image on the right with the reel's section images and its video below them, the gallery at the bottom.
``Page`` names each one so that the handlers (``app``) can update them by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from audiomemory.cli.common import TINY_BANNER
from audiomemory.defaults import DEFAULT_STRENGTH, MAX_STEM_WEIGHT, STEMS

# What the file picker offers (the orchestrator's decoder takes more, and judges what it is given).
AUDIO_TYPES = ["audio", ".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac"]
SEED_MAX = 2**31 - 1  # a seed the browser's numbers hold exactly


@dataclass
class Page:
    banner: gr.Markdown
    song: gr.File
    lyrics: gr.Textbox
    from_song: gr.Checkbox  # shown when the orchestrator has a transcriber
    strength: gr.Slider
    seed: gr.Number
    dice: gr.Button
    steps: gr.Slider
    width: gr.Slider
    height: gr.Slider
    scheduler: gr.Dropdown
    weights: list[gr.Slider]  # one per stem of STEMS: the listener's emphasis
    generate: gr.Button
    cancel: gr.Button
    sections: gr.Slider  # the reel's: 0 = as many as the song has
    min_section_seconds: gr.Number  # 0 = the orchestrator's default
    seed_per_section: gr.Checkbox
    make_reel: gr.Button
    status: gr.Textbox
    image: gr.Image
    parameters: gr.Textbox
    download: gr.File
    reel_images: gr.Gallery  # the reel's sections, as they are painted
    reel_video: gr.Video  # the reel's MP4: the images with the song's own audio
    gallery: gr.Gallery
    shown: gr.State  # the gallery's image paths, in the order shown (a click names an index)

    @property
    def form(self) -> list[gr.components.Component]:
        """The job's inputs, in the order the generate handler takes them."""
        return [self.song, self.lyrics, self.from_song, self.strength, self.seed, self.steps, self.width,
                self.height, self.scheduler, *self.weights]


def _form() -> dict[str, Any]:
    parts: dict[str, Any] = {}
    parts["song"] = gr.File(label="Song", file_types=AUDIO_TYPES, type="filepath", elem_id="song")
    parts["lyrics"] = gr.Textbox(label="Lyrics (optional: without them the audio alone steers)", lines=6,
                                 elem_id="lyrics")
    parts["from_song"] = gr.Checkbox(False, label="Lyrics from the song (its vocals, transcribed; the box is "
                                     "then ignored)", visible=False, elem_id="from-song")
    parts["strength"] = gr.Slider(0.0, 1.0, value=DEFAULT_STRENGTH, step=0.01,
                                  label="Strength (how far the audio bends the lyrics)", elem_id="strength")
    with gr.Row(equal_height=True):
        parts["seed"] = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=SEED_MAX, scale=4,
                                  elem_id="seed")
        parts["dice"] = gr.Button("🎲", scale=1, min_width=40, elem_id="dice")
    parts["steps"] = gr.Slider(1, 150, value=20, step=1, label="Steps", elem_id="steps")
    with gr.Row():
        parts["width"] = gr.Slider(64, 1024, value=512, step=8, label="Width", elem_id="width")
        parts["height"] = gr.Slider(64, 1024, value=512, step=8, label="Height", elem_id="height")
    parts["scheduler"] = gr.Dropdown([("the model's default", "")], value="", label="Scheduler",
                                     elem_id="scheduler")
    gr.Markdown("Emphasis: how much each stem weighs in the song's memory (1 = as heard, 0 = left out)")
    with gr.Row():
        parts["weights"] = [gr.Slider(0.0, MAX_STEM_WEIGHT, value=1.0, step=0.05, label=stem.capitalize(),
                                      elem_id=f"weight-{stem}", min_width=100) for stem in STEMS]
    with gr.Accordion("Reel: an image for each part of the song, played with the song", open=False):
        parts["sections"] = gr.Slider(0, 16, value=0, step=1, label="Sections (0: as many as the song has)",
                                      elem_id="sections")
        parts["min_section_seconds"] = gr.Number(0, label="Shortest section, seconds (0: the orchestrator's default)",
                                                 precision=0, minimum=0, elem_id="min-section-seconds")
        parts["seed_per_section"] = gr.Checkbox(False, label="A seed for each section (else one seed: the "
                                                "differences come from the music)", elem_id="seed-per-section")
    with gr.Row():
        parts["generate"] = gr.Button("Generate", variant="primary", elem_id="generate")
        parts["make_reel"] = gr.Button("Make a reel", elem_id="make-reel")
        parts["cancel"] = gr.Button("Cancel", variant="stop", elem_id="cancel")
    return parts


def layout(tiny: bool) -> Page:
    """The components, inside the ``gr.Blocks`` being built."""
    gr.Markdown("# Audio Memory\nDrop a song, add its lyrics if you like, and see how the song is remembered.")
    banner = gr.Markdown(f"**{TINY_BANNER}**", visible=tiny, elem_id="banner")
    with gr.Row():
        with gr.Column(scale=1):
            form = _form()
        with gr.Column(scale=1):
            status = gr.Textbox(label="Status", interactive=False, elem_id="status")
            image = gr.Image(label="Image", type="filepath", format="png", interactive=False, height=384,
                             elem_id="image")
            parameters = gr.Textbox(label="Parameters", lines=4, interactive=False, elem_id="parameters")
            download = gr.File(label="PNG (with its metadata)", interactive=False, elem_id="download")
            reel_images = gr.Gallery(label="Reel: its sections, as they are painted", columns=4, height=220,
                                     object_fit="contain", allow_preview=False, interactive=False,
                                     elem_id="reel-images")
            reel_video = gr.Video(label="Reel (with the song)", format="mp4", interactive=False, elem_id="reel-video")
    gallery = gr.Gallery(label="Gallery (click an image to remix it: its settings, a new seed)", columns=6,
                         fit_columns=False, height=260, object_fit="contain", allow_preview=False,
                         interactive=False, elem_id="gallery")
    return Page(banner=banner, status=status, image=image, parameters=parameters, download=download,
                reel_images=reel_images, reel_video=reel_video, gallery=gallery, shown=gr.State([]),
                **form)
