"""A realistic sample for the rephrasing check: real problems, rewritten by hand (faithfully, or broken on purpose).

Originals: competition problems of champ-dataset (``champ:<id>``), grade-school problems of reasoning-gym's
``gsm_symbolic`` generator (``gsm:<i>``: item i of ``create_dataset("gsm_symbolic", size=25, seed=7)``), the two
third-party sets tests/test_preprocess.py already reads, resolved at run time (nothing of theirs is stored here);
and a few MATH-style LaTeX problems of our own (``own``, text inline) for the LaTeX normalisation.

Labels: ``faithful`` (same problem: the check should keep it), ``faithful_hard`` (same problem, in a wording the
check cannot verify: ``{61, 62, ..., 120}`` -> "from 61 up to 120", "sum" said as "between them"; counted as false
positives when flagged), ``broken`` with the reason the check must give, ``broken_hard`` (a change the check cannot
see: counted as misses when kept).
"""

from __future__ import annotations

GSM_SEED, GSM_SIZE = 7, 25
GSM_TAIL = " Give the result as your final answer. Do not include units."

SAMPLE: list[dict] = [
    # ---- competition problems (champ-dataset) -------------------------------------------------------------
    {
        "source": "champ:P_Number-Theory_22",
        "label": "faithful",
        "rewrite": "A cryptographer adds 3^105 to 4^105. What remainder does she get when she reduces the result mod 7?",
    },
    {
        "source": "champ:P_Number-Theory_22",
        "label": "broken",
        "reason": "number_changed",
        "rewrite": "A cryptographer adds 3^105 to 4^105. What remainder does she get when she reduces the result mod 9?",
    },
    {
        "source": "champ:P_Sequence_42",
        "label": "faithful",
        "rewrite": "At a party, 1324 guests stand in a ring wearing badges numbered 1 through 1324. Going around, every "
        "2nd guest is asked to leave (so the first four to go wear badges 2, 4, 6 and 8), and this continues until "
        "a single guest remains. Which badge number does the last remaining guest wear?",
    },
    {
        "source": "champ:P_Sequence_42",
        "label": "broken",
        "reason": "number_changed",
        "rewrite": "At a party, 1324 guests stand in a ring wearing badges numbered 1 through 1324. Going around, every "
        "3rd guest is asked to leave (so the first four to go wear badges 3, 6, 9 and 12), and this continues "
        "until a single guest remains. Which badge number does the last remaining guest wear?",
    },
    {
        "source": "champ:P_Polynomial_14",
        "label": "faithful",
        "rewrite": "An engineer needs to split the expression x^4+x^2+1 into a product of factors whose coefficients "
        "are all integers. Write out that factorization.",
    },
    {
        "source": "champ:P_Polynomial_14",
        "label": "broken",
        "reason": "math_changed",
        "rewrite": "An engineer needs to split the expression x^4+x^3+1 into a product of factors whose coefficients "
        "are all integers. Write out that factorization.",
    },
    {
        "source": "champ:P_Number-Theory_69",
        "label": "faithful",
        "rewrite": "Let p be a prime. A puzzle club counts the solutions of 1/x+1/y=1/p in which x and y are positive "
        "integers. How many such solutions are there?",
    },
    {
        "source": "champ:P_Number-Theory_69",
        "label": "broken",
        "reason": "request_changed",
        "rewrite": "Let p be a prime. A puzzle club counts the solutions of 1/x+1/y=1/p in which x and y are integers. "
        "How many such solutions are there?",
    },
    {
        "source": "champ:P_Polynomial_24",
        "label": "faithful",
        "rewrite": "A designer models a cost with f(x)=x^3(x^3+1)(x^3+2)(x^3+3). What is the least value this "
        "polynomial can take?",
    },
    {
        "source": "champ:P_Polynomial_24",
        "label": "broken",
        "reason": "request_changed",
        "rewrite": "A designer models a cost with f(x)=x^3(x^3+1)(x^3+2)(x^3+3). What is the largest value this "
        "polynomial can take?",
    },
    {
        "source": "champ:P_Number-Theory_65",
        "label": "faithful",
        "rewrite": "A number theorist looks for pairs of primes p and q with p^2 - 2*q^2 = 1. Find all such prime "
        "pairs.",
    },
    {
        "source": "champ:P_Polynomial_11",
        "label": "faithful_hard",
        "rewrite": "The polynomial x^2-6x+1 has two roots, x_1 and x_2. Among the integers n from 61 up to 120, for "
        "how many does x_1^n+x_2^n leave a remainder of 4 when divided by 5?",
    },
    {
        "source": "champ:P_Number-Theory_55",
        "label": "faithful",
        "rewrite": "Three integers x, y and z satisfy x^2+y^2=z^2. Whatever the solution, at least how many of the "
        "three numbers are divisible by 4?",
    },
    {
        "source": "champ:P_Combinatorics_25",
        "label": "faithful",
        "rewrite": "Two rooks on a board are at peace when they share neither a row nor a column. On an n x n board, "
        "in how many ways can n rooks be set down so that any two of them are at peace? Give the count as an "
        "expression of n.",
    },
    {
        "source": "champ:P_Combinatorics_25",
        "label": "broken",
        "reason": "unrelated",
        "rewrite": "A bakery sells muffins in boxes. How many boxes does it need for a large order of muffins, "
        "and how long will the baking take?",
    },
    {
        "source": "champ:P_Inequality_25",
        "label": "faithful",
        "rewrite": "A statistician checks the numbers n = 1, 2, ..., 100 one by one. For how many of them does "
        "(1/2)*(3/4)*(5/6)*...*(2n-1)/(2n)≤1/sqrt(3n+1) hold?",
    },
    {
        "source": "champ:P_Combinatorics_2",
        "label": "faithful",
        "rewrite": "A lock code is a string of length 5 made from the digits {0, 1, ..., 9}, and leading zeros are "
        "allowed. How many such codes have strictly increasing digits from left to right?",
    },
    {
        "source": "champ:P_Combinatorics_2",
        "label": "broken",
        "reason": "request_changed",
        "rewrite": "A lock code is a string of length 5 made from the digits {0, 1, ..., 9}, and leading zeros are "
        "allowed. How many such codes are there?",
    },
    {
        "source": "champ:P_Combinatorics_11",
        "label": "faithful",
        "rewrite": "In a convex polygon with n corners, a diagonal is a segment joining two corners that are not next "
        "to each other. Write, as an expression of n, how many diagonals the polygon has.",
    },
    {
        "source": "champ:P_Number-Theory_2",
        "label": "faithful",
        "rewrite": "Can a puzzle setter choose positive integers x and y for which x+y, x+2y and 2x+y are all squares?",
    },
    {
        "source": "champ:P_Inequality_1",
        "label": "faithful_hard",
        "rewrite": "Suppose x solves ax^2+bx+c=0, where a>0, a+b+c≥0, a-b+c≥0 and a-c≥0. What values can x take? "
        "Give the range as an interval.",
    },
    {
        "source": "champ:P_Inequality_1",
        "label": "broken",
        "reason": "math_changed",
        "rewrite": "Suppose x solves ax^2+bx+c=0, where a>0, a+b+c≥0 and a-b+c≥0. What values can x take? Give the "
        "range as an interval.",
    },
    {
        "source": "champ:P_Combinatorics_21",
        "label": "broken_hard",
        "reason": "request_changed",
        "rewrite": "A toy maker paints each face of a cube in a different color. How many colorings are there?",
    },
    # ---- grade-school problems (reasoning-gym gsm_symbolic) ---------------------------------------------------
    {
        "source": "gsm:1",
        "label": "faithful",
        "rewrite": "A student spends 11 minutes on each crossword and 4 minutes on each sudoku. Over the weekend "
        "she completed 3 crosswords and 6 sudokus. How much time did she spend on these puzzles?" + GSM_TAIL,
    },
    {
        "source": "gsm:1",
        "label": "broken",
        "reason": "unit_changed",
        "rewrite": "A student spends 11 seconds on each crossword and 4 seconds on each sudoku. Over the weekend "
        "she completed 3 crosswords and 6 sudokus. How much time did she spend on these puzzles?" + GSM_TAIL,
    },
    {
        "source": "gsm:2",
        "label": "faithful",
        "rewrite": "A bottle of lemonade holds 8 ccs of lemonade. Maria drinks 3 bottles. If the lemonade has 2 "
        "calories per cc, how many calories did she take in?" + GSM_TAIL,
    },
    {
        "source": "gsm:3",
        "label": "faithful",
        "rewrite": "A classroom has 32 girls, and there are 2 times as many boys. How many children are in the "
        "classroom?" + GSM_TAIL,
    },
    {
        "source": "gsm:4",
        "label": "faithful",
        "rewrite": "At the corner shop a loaf of rye bread costs €5 and muffins cost €2 each. How much more do 10 "
        "loaves of rye cost than 9 muffins?" + GSM_TAIL,
    },
    {
        "source": "gsm:4",
        "label": "broken",
        "reason": "unit_changed",
        "rewrite": "At the corner shop a loaf of rye bread costs $5 and muffins cost $2 each. How much more do 10 "
        "loaves of rye cost than 9 muffins?" + GSM_TAIL,
    },
    {
        "source": "gsm:5",
        "label": "faithful",
        "rewrite": "Kai cut a pizza into 28 slices. He ate 3 slices, his sister ate 5 more than him, and his dad ate "
        "5 more than his sister. How many slices of pizza did they eat?" + GSM_TAIL,
    },
    {
        "source": "gsm:5",
        "label": "broken_hard",
        "reason": "request_changed",
        "rewrite": "Kai cut a pizza into 28 slices. He ate 3 slices, his sister ate 5 more than him, and his dad ate "
        "5 more than his sister. How many slices of pizza were left over?" + GSM_TAIL,
    },
    {
        "source": "gsm:6",
        "label": "faithful",
        "rewrite": "Noah has 13 tubes of frosting in his pantry, and every tube frosts 19 cupcakes. He wants to bake "
        "enough cupcakes to use up all the frosting. If a baking tray fits 19 cupcakes, how many trays of cupcakes "
        "should he bake?" + GSM_TAIL,
    },
    {
        "source": "gsm:9",
        "label": "faithful",
        "rewrite": "Pine Hill School has 76 fourth-graders, and 46 of them are girls. On Thursday, 3 fourth-grade "
        "girls and 5 fourth-grade boys stayed home sick. How many fourth-grade boys were in school on Thursday?"
        + GSM_TAIL,
    },
    {
        "source": "gsm:9",
        "label": "broken",
        "reason": "number_changed",
        "rewrite": "Pine Hill School has 76 fourth-graders, and 46 of them are girls. On Thursday, 3 fourth-grade "
        "girls stayed home sick. How many fourth-grade boys were in school on Thursday?" + GSM_TAIL,
    },
    {
        "source": "gsm:13",
        "label": "faithful",
        "rewrite": "Liam owns 42 light red beads, 65 dark red beads, 56 light yellow beads, and 265 dark yellow "
        "beads. What percentage of his beads are red?" + GSM_TAIL,
    },
    {
        "source": "gsm:14",
        "label": "faithful",
        "rewrite": "Maya is 17 years old. 9 years from now, her aunt Rosa will be 3 times as old as Maya is today. "
        "How old is Rosa now?" + GSM_TAIL,
    },
    {
        "source": "gsm:14",
        "label": "broken",
        "reason": "number_changed",
        "rewrite": "Maya is 17 years old. 8 years from now, her aunt Rosa will be 3 times as old as Maya is today. "
        "How old is Rosa now?" + GSM_TAIL,
    },
    {
        "source": "gsm:15",
        "label": "faithful",
        "rewrite": "In a basketball game Ava scored 294 points. Ben scored 49 more than 50% as many as Ava. How many "
        "points did Ava and Ben score altogether?" + GSM_TAIL,
    },
    {
        "source": "gsm:17",
        "label": "faithful",
        "rewrite": "Ann picked 400 strawberries with her big basket, while Beth, using a bucket, picked 0.75 as many "
        "strawberries as Ann. Using a bowl, Carla picked 2 as many as Beth. But Dora, who forgot her basket, picked "
        "0.5 as many strawberries as Carla using her hands. How many strawberries has Dora picked?" + GSM_TAIL,
    },
    {
        "source": "gsm:17",
        "label": "broken",
        "reason": "near_copy",
        "rewrite": "George slew 400 trolls with his mighty mace, while Harry, using a lance, slew 0.75 as many trolls "
        "as George. Using a wooden club, Edward slew 2 as many trolls as Harry. But Bruce, having forgot his sword "
        "at home, slew 0.5 as many trolls as Edward using a butter knife. How many trolls has Bruce slain?" + GSM_TAIL,
    },
    {
        "source": "gsm:20",
        "label": "faithful",
        "rewrite": "A grandmother eats 6 dumplings per day, her husband eats 5 dumplings per day, and their grandson "
        "eats 3 dumplings per day. How many dumplings does the household eat in one week?" + GSM_TAIL,
    },
    {
        "source": "gsm:20",
        "label": "broken",
        "reason": "unit_changed",
        "rewrite": "A grandmother eats 6 dumplings per day, her husband eats 5 dumplings per day, and their grandson "
        "eats 3 dumplings per day. How many dumplings does the household eat in one month?" + GSM_TAIL,
    },
    {
        "source": "gsm:22",
        "label": "faithful",
        "rewrite": "Sara receives 100 text messages a day. 39% of them need no reply, and she answers all the "
        "others. How many messages does Sara answer in a 3 day work week?" + GSM_TAIL,
    },
    {
        "source": "gsm:22",
        "label": "broken",
        "reason": "near_copy",
        "rewrite": "John gets 100 emails a day. 39% of those emails don't require any response. John replies to the "
        "rest of them. How many emails does John reply to in a 3 day work week?" + GSM_TAIL,
    },
    {
        "source": "gsm:19",
        "label": "broken",
        "reason": "unrelated",
        "rewrite": "Write a short poem about the sea at night, with waves and stars.",
    },
    {
        "source": "gsm:19",
        "label": "broken",
        "reason": "request_changed",
        "rewrite": "A scout troop hid 60 badges. The Kim twins each found 18 badges. All the other badges except 20 "
        "were found by their friends. How many badges did the friends find?",
    },
    # ---- MATH-style LaTeX problems (our own text) ---------------------------------------------------------
    {
        "source": "own",
        "original": "Simplify $\\sqrt{50} + \\sqrt{18}$. Express your answer in simplest radical form.",
        "label": "faithful",
        "rewrite": "A carpenter joins two boards whose lengths are $\\sqrt{50}$ and $\\sqrt{18}$ meters. Write their "
        "combined length in simplest radical form.",
    },
    {
        "source": "own",
        "original": "If $3x + 7 = 25$, what is the value of $6x - 4$?",
        "label": "faithful",
        "rewrite": "A shopkeeper's number x satisfies $3x+7=25$. Find the value of $6x-4$ for her.",
    },
    {
        "source": "own",
        "original": "If $3x + 7 = 25$, what is the value of $6x - 4$?",
        "label": "broken",
        "reason": "math_changed",
        "rewrite": "A shopkeeper's number x satisfies $3x+7=52$. Find the value of $6x-4$ for her.",
    },
    {
        "source": "own",
        "original": "How many positive divisors does $3{,}600$ have?",
        "label": "faithful",
        "rewrite": "A tiler has 3,600 square tiles and wants equal rows. How many positive divisors does the number "
        "3,600 have?",
    },
    {
        "source": "own",
        "original": "Two cards are drawn at random without replacement from a standard deck of $52$ cards. What is "
        "the probability that both cards are hearts? Express your answer as a common fraction.",
        "label": "faithful",
        "rewrite": "From a shuffled pack of 52 playing cards, a magician pulls out two cards, one after the other, "
        "without putting the first one back. What is the probability that the two cards are both hearts? Express "
        "your answer as a common fraction.",
    },
    {
        "source": "own",
        "original": "Two cards are drawn at random without replacement from a standard deck of $52$ cards. What is "
        "the probability that both cards are hearts? Express your answer as a common fraction.",
        "label": "broken",
        "reason": "condition_dropped",
        "rewrite": "From a shuffled pack of 52 playing cards, a magician pulls out two cards, one after the other. "
        "What is the probability that the two cards are both hearts? Express your answer as a common fraction.",
    },
    {
        "source": "own",
        "original": "A rectangle has a perimeter of $30$ cm and a length of $9$ cm. What is its area, in square "
        "centimeters?",
        "label": "faithful",
        "rewrite": "The perimeter of a rectangular photo is 30 cm, and the photo is 9 cm long. What is the area of "
        "the photo in square centimeters?",
    },
    {
        "source": "own",
        "original": "A rectangle has a perimeter of $30$ cm and a length of $9$ cm. What is its area, in square "
        "centimeters?",
        "label": "broken",
        "reason": "unit_changed",
        "rewrite": "The perimeter of a rectangular photo is 30 cm, and the photo is 9 cm long. What is the area of "
        "the photo in square inches?",
    },
    {
        "source": "own",
        "original": "What is $\\frac{3}{4}$ of $1{,}200$?",
        "label": "faithful",
        "rewrite": "A library owns 1,200 books and 0.75 of them are novels. How many novels does it own?",
    },
    {
        "source": "own",
        "original": "The sum of two numbers is $1{,}000$ and their difference is $250$. What is the larger number?",
        "label": "faithful_hard",
        "rewrite": "Two warehouses hold 1,000 crates between them, and one holds 250 more crates than the other. "
        "How many crates are in the fuller warehouse?",
    },
]


def resolve(sample: list[dict] | None = None) -> list[dict]:
    """The sample with every ``original`` filled in (champ-dataset and reasoning-gym must be installed)."""
    import champ_dataset
    import reasoning_gym

    champ = champ_dataset.load("v0").problems
    gsm = [x["question"] for x in reasoning_gym.create_dataset("gsm_symbolic", size=GSM_SIZE, seed=GSM_SEED)]
    out = []
    for item in sample or SAMPLE:
        item = dict(item)
        kind, _, key = item["source"].partition(":")
        if kind == "champ":
            item["original"] = champ[key].text
        elif kind == "gsm":
            item["original"] = gsm[int(key)]
        out.append(item)
    return out
