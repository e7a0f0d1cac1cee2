"""Storage URLs as users write them: one lrsweep cannot have meant (a missing slash, a
scheme SQLAlchemy does not take, a path SQLAlchemy would read as another file) is refused
before anything is opened, with the form it likely meant."""

from __future__ import annotations

import sqlalchemy

from lrsweep.store.failures import StorageError

# Schemes users write for SQLite and PostgreSQL that SQLAlchemy does not take as they are.
_SQLITE_SCHEMES = ("sqlite", "sqlite3")
_POSTGRES_SCHEMES = ("postgres", "postgresql", "postgre", "psql", "pg")


def in_memory(url: str) -> bool:
    """An SQLite URL without a file: `sqlite://`, `sqlite+pysqlite://`, `sqlite:///:memory:`."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return False  # not a URL (or a port that is no number): `check_url` says so
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def check_url(url: str) -> None:
    """Refuse a storage URL lrsweep cannot have meant, saying the form it likely meant."""
    if not isinstance(url, str):  # a Path (or None) from Python: SQLAlchemy takes strings
        raise StorageError(f"storage {url!r}: not a URL string; for an SQLite file say "
                           f"sqlite:///{url}" if url else "storage: no URL given")
    scheme, sep, rest = url.partition("://")
    if not sep:
        head, colon, tail = url.partition(":")
        if colon and head.lower() in _SQLITE_SCHEMES:  # sqlite:/x.db, sqlite:x.db
            path = tail.lstrip("/")
            raise StorageError(f"storage {url}: did you mean sqlite:///{path}? (three "
                               f"slashes before a relative path, four before an absolute one: "
                               f"sqlite:////{path})")
        if colon and head.lower() in _POSTGRES_SCHEMES:
            raise StorageError(f"storage {url}: did you mean postgresql://{tail.lstrip('/')}?")
        raise StorageError(f"storage {url}: not a URL; for an SQLite file say sqlite:///{url}"
                           " (or postgresql://USER@HOST/DATABASE for a server)")
    dialect, plus, driver = scheme.partition("+")
    if dialect.lower() in _POSTGRES_SCHEMES and dialect != "postgresql":
        raise StorageError(f"storage {url}: did you mean postgresql{plus}{driver}://{rest}? "
                           "(SQLAlchemy no longer takes postgres://)")
    if dialect.lower() in _SQLITE_SCHEMES and (dialect != "sqlite" or rest and
                                               not url.startswith("sqlite:///")):
        if rest.startswith("/"):  # only the scheme's spelling is wrong
            raise StorageError(f"storage {url}: did you mean sqlite://{rest}?")
        raise StorageError(f"storage {url}: did you mean sqlite:///{rest}? (three slashes "
                           "before a relative path, four before an absolute one)")
    try:
        sqlalchemy.engine.make_url(url)
    except ValueError:  # the one thing make_url does not wrap: a port that is no number
        raise StorageError(f"storage {url}: the port, after the host's ':', must be a number "
                           "(postgresql://USER@HOST:5432/DATABASE)") from None
    except sqlalchemy.exc.ArgumentError:
        pass  # the driver's own words come when the store is opened
    if url.startswith("sqlite:///"):
        _check_sqlite_path(url)


def _check_sqlite_path(url: str) -> None:
    """lrsweep takes all after sqlite:/// as the store's path (its checkpoints, artifacts and
    journal files go beside it), while SQLAlchemy, and so Optuna, reads it as a URL, where `?`
    begins options and `%XX` is an escaped character. Where the readings differ, Optuna would
    write to another file than the one lrsweep looks after: refused before anything is made."""
    path = url.removeprefix("sqlite:///")
    if "?" in path:
        raise StorageError(f"storage {url}: an SQLite store's URL takes no '?' (options: "
                           "lrsweep sets its own; in the file's path: rename the file or its "
                           "folder)")
    try:
        database = sqlalchemy.engine.make_url(url).database
    except sqlalchemy.exc.ArgumentError:
        database = None
    if database != path:
        raise StorageError(f"storage {url}: a URL reads '%XX' as an escaped character, which "
                           f"names the file {database!r}, not {path!r}; rename the file or its "
                           "folder")
