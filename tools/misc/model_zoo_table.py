"""Print the model-zoo table of the README, rendered from the metafiles (one source).

Paste the output between the README's ``<!-- model-zoo:start -->`` and
``<!-- model-zoo:end -->`` lines; ``--check README.md`` exits with an error when the README's
table is not the rendered one (tests/apis/test_model_zoo.py checks the same)::

    python tools/misc/model_zoo_table.py
    python tools/misc/model_zoo_table.py --check README.md
"""
import argparse
from typing import List, Optional

from stl_mm.apis.model_zoo import model_zoo_table, readme_table


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--check', metavar='README',
                        help='compare the table of this README with the rendered one')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    table = model_zoo_table()
    if args.check is None:
        print(table)
        return
    with open(args.check) as f:
        try:
            written = readme_table(f.read(), args.check)
        except ValueError as error:
            raise SystemExit(f'model_zoo_table.py: {error}')
    if written != table:
        raise SystemExit(f'model_zoo_table.py: the model-zoo table of {args.check} is out of '
                         'date; replace it by the output of python tools/misc/model_zoo_table.py')
    print(f'{args.check}: the model-zoo table is up to date.')


if __name__ == '__main__':
    main()
