from episcribe.lerobot.language import make_row
from episcribe.modules.base import EpisodeContext, frame_time


async def run_episode(ctx: EpisodeContext) -> list[dict]:
    return [make_row("assistant", ctx.settings["phrase"], "motion", frame_time(ctx.timestamps, 0))]
