from harness.schema import render_markdown

print(render_markdown(), end="")
