"""pyproject.toml as the Comfy registry reads it: the icon is a URL (the registry does not resolve a
path inside the package), the one in this repository; the licence is the file that ships."""
import pathlib
import tomllib

PACK = pathlib.Path(__file__).resolve().parents[2]
META = tomllib.loads((PACK / "pyproject.toml").read_text())


def test_icon_is_a_url_to_the_icon_in_this_repository():
    icon, repo = META["tool"]["comfy"]["Icon"], META["project"]["urls"]["Repository"]
    owner_name = repo.removeprefix("https://github.com/").strip("/")
    prefix = f"https://raw.githubusercontent.com/{owner_name}/main/"
    assert icon.startswith(prefix), (icon, prefix)
    assert (PACK / icon.removeprefix(prefix)).is_file(), f"{icon} names a file the repository lacks"


def test_license_is_the_gpl3_file_that_ships():
    assert META["project"]["license"] == {"file": "LICENSE"}
    text = (PACK / "LICENSE").read_text()
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE") and "Version 3, 29 June 2007" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the whole text, not a notice
