"""The TensorRT op table in parts: ``base`` (context, rule, data-type ladders), ``checks`` (attribute
checks from the lists' restrictions), ``rows`` (the table). ``host.compiler.patterns`` applies it."""
