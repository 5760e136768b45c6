"""audit.html: the top cases of each list with thumbnails, as one self-contained page.

Thumbnails are embedded as data: URLs (as in the run report), so the page can be moved or
mailed without the image folder; only the first MAX_CASES of each list get pictures.
"""

import base64
import html
import io
import os

from PIL import Image

MAX_CASES = 40
THUMBNAIL_PIXELS = 96

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>retrain data audit</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: middle; }}
th {{ background: #f2f2f2; }}
img {{ width: {size}px; height: {size}px; object-fit: contain; background: #eee; margin: 2px; }}
.note {{ color: #666; }}
.warn {{ color: #a40; font-weight: bold; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def build_page(result):
    """The HTML text of audit.html for an audit.AuditResult."""
    image_dir = result.image_dir
    counts = result.counts
    parts = [f"<h1>Data audit of {_text(image_dir)}</h1>",
             f"<p>{_text(result.summary())}</p>"]
    if counts["leaks"]:
        parts.append(f'<p class="warn">{counts["leaks"]} duplicate group(s) span splits: the '
                     "same picture is trained on and tested on, which inflates the test score.</p>")
    parts.append(_table(
        "Possible label errors", "Out-of-fold probability that the folder is wrong, highest "
        "first (docs/audit.md).", ["image", "folder", "suggested", "score"],
        [([item["path"]], [item["given"], item["suggested"], f"{item['score']:.3f}"])
         for item in result.label_issues], image_dir))
    parts.append(_table(
        "Duplicates", "Exact: identical files. Near: the same picture re-encoded, resized or "
        "cropped.", ["images", "kind", "similarity", "labels", "splits"],
        [(group["paths"], [group["kind"], f"{group['similarity']:.3f}",
                           ", ".join(sorted(set(group["labels"]))),
                           ", ".join(sorted(set(group["splits"])))])
         for group in result.duplicates], image_dir))
    parts.append(_table(
        "Outliers", "Far from every other image of their class (robust z-score of the "
        "distance to the nearest ones).", ["image", "label", "z", "distance"],
        [([item["path"]], [item["label"], f"{item['score']:.1f}", f"{item['distance']:.3f}"])
         for item in result.outliers], image_dir))
    return _PAGE.format(size=THUMBNAIL_PIXELS, body="\n".join(parts))


def _table(title, note, header, rows, image_dir):
    """A section: heading with the count, a note, and the first MAX_CASES rows, each
    ([relative image paths], [cell texts])."""
    parts = [f"<h2>{_text(title)} ({len(rows)})</h2>", f'<p class="note">{_text(note)}</p>']
    if not rows:
        return "".join(parts) + '<p class="note">None.</p>'
    head = "".join(f"<th>{_text(name)}</th>" for name in header)
    body = []
    for paths, cells in rows[:MAX_CASES]:
        pictures = "".join(_thumbnail(image_dir, path) for path in paths)
        names = "<br>".join(_text(path) for path in paths)
        body.append(f"<tr><td>{pictures}<br>{names}</td>"
                    + "".join(f"<td>{_text(cell)}</td>" for cell in cells) + "</tr>")
    parts.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
    if len(rows) > MAX_CASES:
        parts.append(f'<p class="note">The first {MAX_CASES} of {len(rows)}; audit.json '
                     "lists all.</p>")
    return "".join(parts)


def _thumbnail(image_dir, relative_path):
    """An <img> of the picture scaled to fit THUMBNAIL_PIXELS, or "" if it cannot be read."""
    try:
        with Image.open(os.path.join(image_dir, *relative_path.split("/"))) as image:
            image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=85)
    except (OSError, ValueError, Image.DecompressionBombError):
        return ""
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/jpeg;base64,{data}" alt="{_text(relative_path)}">'


def _text(value):
    return html.escape(str(value))
