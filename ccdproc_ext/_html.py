"""The HTML of the night report's page: escaped text, tables, lists of files, pictures,
and the page itself with its style sheet (no JavaScript, nothing from the network).
"""

import html
from urllib.parse import quote

from ._night_folder import cell_text

__all__ = ["escape", "files_html", "img_html", "page_html", "table_html"]


def escape(value):
    """A table cell or any value as HTML text (`cell_text`, escaped, quotes too)."""
    return html.escape(cell_text(value), quote=True)


def table_html(header, rows, *, numeric=()):
    """An HTML table; ``rows`` are lists of already escaped cells (no header if ``None``);
    the columns ``numeric`` (indices) are aligned right."""
    head = "".join(f"<th>{escape(name)}</th>" for name in header or ())
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
                        for i, cell in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    head = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def files_html(files):
    """File names as ``<code>``, joined by commas."""
    return ", ".join(f"<code>{escape(file)}</code>" for file in files)


def img_html(pictures, path, alt, *, width=None):
    """An ``<img>`` of a picture of ``pictures`` (a `~ccdproc_ext.pictures.Pictures`);
    with ``width``, drawn at that width, pixels sharp."""
    size = f' width="{width}" class="pixels"' if width else ""
    return (f'<img src="{quote(f"{pictures.folder.name}/{path.name}")}" alt="{escape(alt)}"'
            f'{size} loading="lazy">')


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 78em;
       padding: 0 1em; color: #1d1d1f; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc;
     margin-top: 1.8em; } h3 { margin-bottom: .3em; }
code { font-size: .9em; background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
th, td { border: 1px solid #d0d0d0; padding: .25em .5em; text-align: left;
         vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
ul.groups li { margin-bottom: .6em; } .problem { color: #a40000; font-weight: 600; }
.note { color: #7a5200; font-weight: 600; } .kind { color: #777; font-size: .85em; }
.detail, details { color: #444; font-size: .9em; } .ok { color: #196619; font-weight: 600; }
.master { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start;
          margin-bottom: 1.2em; }
.master img { max-width: 100%; height: auto; } img.pixels { image-rendering: pixelated; }
.thumbs { display: flex; flex-wrap: wrap; gap: .8em; }
figure { margin: 0; padding: .4em; border: 1px solid #ddd; border-radius: 4px;
         background: #fafafa; display: table; }
figcaption { font-size: .8em; display: table-caption; caption-side: bottom;
             padding: 0 .4em .4em; background: #fafafa; }
figure .pair { display: flex; gap: .3em; } nav a { margin-right: 1em; }
"""


def page_html(title, sections):
    """The whole page: ``sections`` are ``(anchor, heading, content)``, the content HTML;
    a navigation line links to each."""
    nav = " ".join(f'<a href="#{anchor}">{escape(heading)}</a>'
                   for anchor, heading, _ in sections)
    body = "\n".join(f'<section id="{anchor}"><h2>{escape(heading)}</h2>\n{content}</section>'
                     for anchor, heading, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{escape(title)}</h1>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n")
