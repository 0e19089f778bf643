# python-astm 0.5.0 imports Iterable from `collections`, which Python 3.10 removed.
import collections
import collections.abc

collections.Iterable = collections.abc.Iterable
