//! The fixed vocabulary of the demo world: topics, curated hashtags, newcomer tags and the
//! stems and suffixes that fill the tag list up to [`NUM_HASHTAGS`].
//!
//! Nothing here is random: the tag list is the same for every seed and every `dim`, so a
//! hashtag means the same thing in every demo snapshot.

use std::collections::BTreeSet;

use unicode_normalization::UnicodeNormalization;

/// Size of the hashtag list of every demo snapshot.
pub const NUM_HASHTAGS: usize = 300;

/// `(tag, English display, Chinese display)`.
type TagRow = (&'static str, &'static str, &'static str);

/// One content topic. The per-topic factors scale engagement rates, so that e.g. travel advice
/// is saved and memes are shared, independently of a post's hidden quality.
pub struct Topic {
    pub key: &'static str,
    pub name_en: &'static str,
    pub name_zh: &'static str,
    /// Relative share of creators whose main language is Chinese that pick this topic.
    pub weight_zh: f64,
    /// The same for English-speaking creators (the January 2025 newcomers skewed to pets,
    /// memes, language exchange and comparing living costs).
    pub weight_en: f64,
    /// Brands buy ads here.
    pub commercial: bool,
    /// Creators take brand deals here (commercial topics and a few more).
    pub sponsorable: bool,
    pub like: f64,
    pub save: f64,
    pub comment: f64,
    pub share: f64,
    pub tags: &'static [TagRow],
    /// `(English stem, Chinese stem)` combined with [`FILLER_SUFFIXES`] into extra tags.
    pub stems: &'static [(&'static str, &'static str)],
}

pub const TOPICS: &[Topic] = &[
    Topic {
        key: "pets",
        name_en: "Pets & cats",
        name_zh: "萌宠",
        weight_zh: 6.0,
        weight_en: 8.0,
        commercial: false,
        sponsorable: true,
        like: 1.5,
        save: 0.7,
        comment: 1.1,
        share: 1.5,
        tags: &[
            ("cats", "#cats", "#猫"),
            ("猫咪", "#kitty", "#猫咪"),
            ("dogs", "#dogs", "#狗狗"),
            ("铲屎官", "#petparent", "#铲屎官"),
            ("pets", "#pets", "#萌宠"),
            ("kitten", "#kitten", "#小猫"),
            ("橘猫", "#orangecat", "#橘猫"),
            ("puppy", "#puppy", "#小狗"),
            ("petcare", "#petcare", "#宠物护理"),
        ],
        stems: &[("cat", "猫咪"), ("dog", "狗狗"), ("pet", "宠物")],
    },
    Topic {
        key: "travel_china",
        name_en: "Travel in China",
        name_zh: "中国旅行",
        weight_zh: 7.0,
        weight_en: 6.0,
        commercial: true,
        sponsorable: true,
        like: 1.0,
        save: 1.5,
        comment: 1.0,
        share: 1.2,
        tags: &[
            ("travelchina", "#TravelChina", "#中国旅行"),
            ("旅游攻略", "#travelguide", "#旅游攻略"),
            ("240hourvisafree", "#240HourVisaFree", "#240小时过境免签"),
            ("citywalk", "#citywalk", "#城市漫步"),
            ("chongqing", "#Chongqing", "#重庆"),
            ("shanghai", "#Shanghai", "#上海"),
            ("chengdu", "#Chengdu", "#成都"),
            ("北京", "#Beijing", "#北京"),
            ("alipaytips", "#AlipayTips", "#支付宝攻略"),
            ("highspeedrail", "#HighSpeedRail", "#高铁"),
        ],
        stems: &[("travel", "旅行"), ("trip", "出游"), ("hotel", "酒店")],
    },
    Topic {
        key: "food",
        name_en: "Food",
        name_zh: "美食",
        weight_zh: 9.0,
        weight_en: 6.0,
        commercial: true,
        sponsorable: true,
        like: 1.2,
        save: 1.1,
        comment: 1.0,
        share: 1.0,
        tags: &[
            ("food", "#food", "#美食"),
            ("探店", "#foodreview", "#探店"),
            ("hotpot", "#hotpot", "#火锅"),
            ("foodie", "#foodie", "#吃货"),
            ("奶茶", "#bubbletea", "#奶茶"),
            ("streetfood", "#StreetFood", "#街头小吃"),
            ("chinesefood", "#ChineseFood", "#中餐"),
            ("dimsum", "#DimSum", "#早茶"),
            ("spicyfood", "#SpicyFood", "#吃辣"),
        ],
        stems: &[("food", "美食"), ("snack", "零食"), ("dessert", "甜品")],
    },
    Topic {
        key: "skincare",
        name_en: "Skincare & beauty",
        name_zh: "护肤美妆",
        weight_zh: 9.0,
        weight_en: 3.0,
        commercial: true,
        sponsorable: true,
        like: 1.0,
        save: 1.3,
        comment: 0.9,
        share: 0.8,
        tags: &[
            ("skincare", "#skincare", "#护肤"),
            ("美妆", "#beauty", "#美妆"),
            ("makeup", "#makeup", "#化妆"),
            ("护肤心得", "#skincaretips", "#护肤心得"),
            ("cbeauty", "#CBeauty", "#国货美妆"),
            ("sunscreen", "#sunscreen", "#防晒"),
            ("平价好物", "#affordablefinds", "#平价好物"),
            ("素颜", "#nomakeup", "#素颜"),
            ("lipstick", "#lipstick", "#口红"),
        ],
        stems: &[("skin", "护肤"), ("makeup", "彩妆"), ("beauty", "美妆")],
    },
    Topic {
        key: "study",
        name_en: "Study help",
        name_zh: "学习",
        weight_zh: 7.0,
        weight_en: 2.0,
        commercial: false,
        sponsorable: false,
        like: 0.9,
        save: 1.5,
        comment: 1.0,
        share: 0.9,
        tags: &[
            ("studytips", "#StudyTips", "#学习方法"),
            ("考研", "#gradschoolexam", "#考研"),
            ("studywithme", "#StudyWithMe", "#一起学习"),
            ("留学", "#studyabroad", "#留学"),
            ("gaokao", "#gaokao", "#高考"),
            ("ielts", "#IELTS", "#雅思"),
            ("自律", "#selfdiscipline", "#自律"),
            ("notetaking", "#NoteTaking", "#笔记"),
            ("productivity", "#productivity", "#效率"),
        ],
        stems: &[("study", "学习"), ("exam", "考试"), ("school", "校园")],
    },
    Topic {
        key: "language_exchange",
        name_en: "Language exchange",
        name_zh: "语言交流",
        weight_zh: 3.0,
        weight_en: 7.0,
        commercial: false,
        sponsorable: false,
        like: 1.0,
        save: 1.1,
        comment: 2.0,
        share: 0.9,
        tags: &[
            ("learnchinese", "#LearnChinese", "#学中文"),
            ("学英语", "#LearnEnglish", "#学英语"),
            ("英语口语", "#SpokenEnglish", "#英语口语"),
            ("chineselesson", "#ChineseLesson", "#中文课"),
            ("hsk", "#HSK", "#汉语水平考试"),
            ("pinyin", "#Pinyin", "#拼音"),
            ("slang", "#Slang", "#俚语"),
            ("englishcorner", "#EnglishCorner", "#英语角"),
        ],
        stems: &[
            ("chinese", "中文"),
            ("english", "英语"),
            ("language", "语言"),
        ],
    },
    Topic {
        key: "fitness",
        name_en: "Fitness",
        name_zh: "健身",
        weight_zh: 5.0,
        weight_en: 3.0,
        commercial: false,
        sponsorable: true,
        like: 1.0,
        save: 1.1,
        comment: 0.8,
        share: 0.8,
        tags: &[
            ("fitness", "#fitness", "#健身"),
            ("减脂", "#fatloss", "#减脂"),
            ("gym", "#gym", "#健身房"),
            ("running", "#running", "#跑步"),
            ("yoga", "#yoga", "#瑜伽"),
            ("pilates", "#Pilates", "#普拉提"),
            ("homeworkout", "#HomeWorkout", "#居家锻炼"),
            ("马甲线", "#abs", "#马甲线"),
        ],
        stems: &[("workout", "锻炼"), ("fit", "健身"), ("run", "跑步")],
    },
    Topic {
        key: "finance",
        name_en: "Personal finance",
        name_zh: "理财",
        weight_zh: 4.0,
        weight_en: 3.0,
        commercial: true,
        sponsorable: true,
        like: 0.8,
        save: 1.3,
        comment: 1.1,
        share: 1.0,
        tags: &[
            ("理财", "#investing", "#理财"),
            ("personalfinance", "#PersonalFinance", "#个人理财"),
            ("savingmoney", "#SavingMoney", "#省钱"),
            ("存钱", "#savings", "#存钱"),
            ("budgeting", "#budgeting", "#记账"),
            ("副业", "#sidehustle", "#副业"),
            ("frugalliving", "#FrugalLiving", "#节俭生活"),
            ("creditcard", "#CreditCard", "#信用卡"),
        ],
        stems: &[("money", "金钱"), ("budget", "预算"), ("invest", "投资")],
    },
    Topic {
        key: "healthcare",
        name_en: "Healthcare costs",
        name_zh: "看病花费",
        weight_zh: 2.0,
        weight_en: 5.0,
        commercial: false,
        sponsorable: false,
        like: 1.0,
        save: 1.2,
        comment: 1.5,
        share: 1.4,
        tags: &[
            ("healthcarecosts", "#HealthcareCosts", "#医疗费用"),
            ("看病", "#SeeingADoctor", "#看病"),
            ("medicalbills", "#MedicalBills", "#医疗账单"),
            ("医保", "#MedicalInsurance", "#医保"),
            ("insulin", "#insulin", "#胰岛素"),
            ("hospitalvisit", "#HospitalVisit", "#去医院"),
            ("dentist", "#dentist", "#牙医"),
            ("pharmacy", "#pharmacy", "#药店"),
        ],
        stems: &[
            ("health", "健康"),
            ("medical", "医疗"),
            ("hospital", "医院"),
        ],
    },
    Topic {
        key: "memes",
        name_en: "Memes",
        name_zh: "梗图",
        weight_zh: 4.0,
        weight_en: 9.0,
        commercial: false,
        sponsorable: false,
        like: 1.6,
        save: 0.3,
        comment: 1.2,
        share: 2.5,
        tags: &[
            ("memes", "#memes", "#梗图"),
            ("funny", "#funny", "#搞笑"),
            ("mychinesespy", "#MyChineseSpy", "#我的中国间谍"),
            ("表情包", "#stickers", "#表情包"),
            ("沙雕", "#silly", "#沙雕"),
            ("relatable", "#relatable", "#真实"),
            ("抽象", "#absurd", "#抽象"),
            ("整活", "#justforfun", "#整活"),
        ],
        stems: &[("meme", "梗"), ("funny", "搞笑"), ("joke", "笑话")],
    },
    Topic {
        key: "fashion",
        name_en: "Fashion",
        name_zh: "穿搭",
        weight_zh: 8.0,
        weight_en: 3.0,
        commercial: true,
        sponsorable: true,
        like: 1.2,
        save: 1.0,
        comment: 0.8,
        share: 0.9,
        tags: &[
            ("ootd", "#OOTD", "#今日穿搭"),
            ("穿搭", "#outfits", "#穿搭"),
            ("fashion", "#fashion", "#时尚"),
            ("streetstyle", "#StreetStyle", "#街拍"),
            ("hanfu", "#Hanfu", "#汉服"),
            ("显瘦穿搭", "#SlimmingOutfits", "#显瘦穿搭"),
            ("vintage", "#vintage", "#复古"),
            ("sneakers", "#sneakers", "#球鞋"),
        ],
        stems: &[("outfit", "穿搭"), ("style", "风格"), ("wardrobe", "衣橱")],
    },
    Topic {
        key: "photography",
        name_en: "Photography",
        name_zh: "摄影",
        weight_zh: 5.0,
        weight_en: 3.0,
        commercial: false,
        sponsorable: false,
        like: 1.3,
        save: 1.0,
        comment: 0.8,
        share: 1.0,
        tags: &[
            ("photography", "#photography", "#摄影"),
            ("拍照姿势", "#PosingIdeas", "#拍照姿势"),
            ("filmcamera", "#FilmCamera", "#胶片相机"),
            ("手机摄影", "#PhonePhotography", "#手机摄影"),
            ("portrait", "#portrait", "#人像"),
            ("landscape", "#landscape", "#风光"),
            ("photoediting", "#PhotoEditing", "#修图"),
        ],
        stems: &[("photo", "照片"), ("camera", "相机"), ("shot", "拍摄")],
    },
    Topic {
        key: "tech",
        name_en: "Tech & gadgets",
        name_zh: "数码科技",
        weight_zh: 5.0,
        weight_en: 4.0,
        commercial: true,
        sponsorable: true,
        like: 0.9,
        save: 1.2,
        comment: 1.0,
        share: 0.9,
        tags: &[
            ("tech", "#tech", "#科技"),
            ("数码好物", "#TechFinds", "#数码好物"),
            ("gadgets", "#gadgets", "#数码"),
            ("smartphone", "#smartphone", "#手机"),
            ("ai", "#AI", "#人工智能"),
            ("华为", "#Huawei", "#华为"),
            ("xiaomi", "#Xiaomi", "#小米"),
            ("ev", "#EV", "#新能源车"),
            ("laptop", "#laptop", "#笔记本电脑"),
        ],
        stems: &[("tech", "科技"), ("gadget", "数码"), ("phone", "手机")],
    },
    Topic {
        key: "cooking",
        name_en: "Cooking & recipes",
        name_zh: "家常菜谱",
        weight_zh: 7.0,
        weight_en: 4.0,
        commercial: false,
        sponsorable: true,
        like: 1.0,
        save: 1.4,
        comment: 0.9,
        share: 1.0,
        tags: &[
            ("recipes", "#recipes", "#食谱"),
            ("家常菜", "#HomeCooking", "#家常菜"),
            ("cooking", "#cooking", "#做饭"),
            ("懒人食谱", "#EasyRecipes", "#懒人食谱"),
            ("dumplings", "#dumplings", "#饺子"),
            ("airfryer", "#AirFryer", "#空气炸锅"),
            ("baking", "#baking", "#烘焙"),
            ("减脂餐", "#HealthyMeals", "#减脂餐"),
            ("mealprep", "#MealPrep", "#备餐"),
        ],
        stems: &[("recipe", "食谱"), ("cook", "做饭"), ("kitchen", "厨房")],
    },
    Topic {
        key: "music",
        name_en: "Music",
        name_zh: "音乐",
        weight_zh: 4.0,
        weight_en: 4.0,
        commercial: false,
        sponsorable: false,
        like: 1.3,
        save: 0.5,
        comment: 0.9,
        share: 1.3,
        tags: &[
            ("music", "#music", "#音乐"),
            ("翻唱", "#cover", "#翻唱"),
            ("cpop", "#Cpop", "#华语音乐"),
            ("guitar", "#guitar", "#吉他"),
            ("piano", "#piano", "#钢琴"),
            ("playlist", "#playlist", "#歌单"),
            ("livehouse", "#livehouse", "#现场演出"),
            ("guzheng", "#guzheng", "#古筝"),
        ],
        stems: &[("music", "音乐"), ("song", "歌曲"), ("singing", "唱歌")],
    },
    Topic {
        key: "books",
        name_en: "Books",
        name_zh: "读书",
        weight_zh: 4.0,
        weight_en: 2.0,
        commercial: false,
        sponsorable: false,
        like: 1.0,
        save: 1.2,
        comment: 1.0,
        share: 0.8,
        tags: &[
            ("books", "#books", "#读书"),
            ("书单", "#BookList", "#书单"),
            ("bookrecs", "#BookRecs", "#好书推荐"),
            ("读书笔记", "#ReadingNotes", "#读书笔记"),
            ("reading", "#reading", "#阅读"),
            ("webnovel", "#WebNovel", "#网络小说"),
            ("三体", "#ThreeBodyProblem", "#三体"),
            ("classics", "#classics", "#经典名著"),
        ],
        stems: &[("book", "书籍"), ("reading", "阅读"), ("novel", "小说")],
    },
    Topic {
        key: "gaming",
        name_en: "Gaming",
        name_zh: "游戏",
        weight_zh: 4.0,
        weight_en: 4.0,
        commercial: false,
        sponsorable: true,
        like: 1.2,
        save: 0.7,
        comment: 1.1,
        share: 1.0,
        tags: &[
            ("gaming", "#gaming", "#游戏"),
            ("原神", "#GenshinImpact", "#原神"),
            ("blackmythwukong", "#BlackMythWukong", "#黑神话悟空"),
            ("王者荣耀", "#HonorOfKings", "#王者荣耀"),
            ("nintendoswitch", "#NintendoSwitch", "#任天堂"),
            ("indiegames", "#IndieGames", "#独立游戏"),
            ("esports", "#esports", "#电竞"),
            ("mobilegames", "#MobileGames", "#手游"),
        ],
        stems: &[("game", "游戏"), ("gamer", "玩家"), ("console", "主机")],
    },
    Topic {
        key: "parenting",
        name_en: "Parenting",
        name_zh: "育儿",
        weight_zh: 5.0,
        weight_en: 1.0,
        commercial: false,
        sponsorable: true,
        like: 1.0,
        save: 1.3,
        comment: 1.1,
        share: 0.9,
        tags: &[
            ("parenting", "#parenting", "#育儿"),
            ("育儿经验", "#ParentingTips", "#育儿经验"),
            ("momlife", "#MomLife", "#宝妈日常"),
            ("toddler", "#toddler", "#幼儿"),
            ("亲子", "#FamilyTime", "#亲子"),
            ("babyfood", "#BabyFood", "#辅食"),
            ("早教", "#EarlyLearning", "#早教"),
        ],
        stems: &[("baby", "宝宝"), ("mom", "宝妈"), ("kids", "孩子")],
    },
    Topic {
        key: "home_decor",
        name_en: "Home & decor",
        name_zh: "家居",
        weight_zh: 6.0,
        weight_en: 2.0,
        commercial: false,
        sponsorable: true,
        like: 1.1,
        save: 1.3,
        comment: 0.8,
        share: 0.8,
        tags: &[
            ("homedecor", "#HomeDecor", "#家居"),
            ("装修", "#renovation", "#装修"),
            ("roomtour", "#RoomTour", "#房间布置"),
            ("租房改造", "#RenterMakeover", "#租房改造"),
            ("organizing", "#organizing", "#收纳"),
            ("cozyhome", "#CozyHome", "#温馨小家"),
            ("plants", "#plants", "#绿植"),
            ("minimalism", "#minimalism", "#极简"),
        ],
        stems: &[("home", "家居"), ("room", "房间"), ("decor", "装饰")],
    },
    Topic {
        key: "city_life",
        name_en: "City life & housing",
        name_zh: "城市生活",
        weight_zh: 5.0,
        weight_en: 4.0,
        commercial: false,
        sponsorable: false,
        like: 1.0,
        save: 1.0,
        comment: 1.3,
        share: 1.1,
        tags: &[
            ("citylife", "#CityLife", "#城市生活"),
            ("租房", "#renting", "#租房"),
            ("rent", "#rent", "#房租"),
            ("costofliving", "#CostOfLiving", "#生活成本"),
            ("打工人", "#WorkerLife", "#打工人"),
            ("housingcosts", "#HousingCosts", "#房价"),
            ("commute", "#commute", "#通勤"),
            ("上海生活", "#ShanghaiLife", "#上海生活"),
        ],
        stems: &[("city", "城市"), ("apartment", "公寓"), ("work", "工作")],
    },
];

/// Generic suffixes that make a topic stem into a plausible tag (`cat` + `tips` = `cattips`,
/// `#猫咪小技巧`). Ordered from the most to the least common.
pub const FILLER_SUFFIXES: &[(&str, &str)] = &[
    ("tips", "小技巧"),
    ("daily", "日常"),
    ("guide", "指南"),
    ("life", "生活"),
    ("diary", "日记"),
    ("ideas", "灵感"),
    ("101", "入门"),
    ("share", "分享"),
    ("vlog", "vlog"),
    ("lovers", "爱好者"),
];

/// A cross-topic tag of the January 2025 wave. `lang` says which community uses it most;
/// `related` lists topic keys it leans towards (empty: about the platform itself).
pub struct NewcomerTag {
    pub tag: &'static str,
    pub display_en: &'static str,
    pub display_zh: &'static str,
    pub lang: super::Lang,
    pub related: &'static [&'static str],
    /// Relative use in English-language posts and in Chinese-language posts.
    pub weight_en: f64,
    pub weight_zh: f64,
}

pub const NEWCOMER_TAGS: &[NewcomerTag] = {
    use super::Lang::{En, Mixed, Zh};
    &[
        NewcomerTag {
            tag: "tiktokrefugee",
            display_en: "#TikTokRefugee",
            display_zh: "#TikTok难民",
            lang: En,
            related: &[],
            weight_en: 10.0,
            weight_zh: 2.0,
        },
        NewcomerTag {
            tag: "newhere",
            display_en: "#NewHere",
            display_zh: "#新人报到",
            lang: En,
            related: &[],
            weight_en: 5.0,
            weight_zh: 0.3,
        },
        NewcomerTag {
            tag: "hellofromusa",
            display_en: "#HelloFromUSA",
            display_zh: "#来自美国的问候",
            lang: En,
            related: &[],
            weight_en: 4.0,
            weight_zh: 0.3,
        },
        NewcomerTag {
            tag: "rednote",
            display_en: "#RedNote",
            display_zh: "#小红书",
            lang: En,
            related: &[],
            weight_en: 3.0,
            weight_zh: 1.0,
        },
        NewcomerTag {
            tag: "languageexchange",
            display_en: "#LanguageExchange",
            display_zh: "#语言交换",
            lang: Mixed,
            related: &["language_exchange"],
            weight_en: 3.0,
            weight_zh: 3.0,
        },
        NewcomerTag {
            tag: "catsofrednote",
            display_en: "#CatsOfRedNote",
            display_zh: "#小红书猫咪",
            lang: En,
            related: &["pets"],
            weight_en: 2.0,
            weight_zh: 0.5,
        },
        NewcomerTag {
            tag: "cattax",
            display_en: "#CatTax",
            display_zh: "#猫税",
            lang: Mixed,
            related: &["pets", "memes"],
            weight_en: 2.0,
            weight_zh: 3.0,
        },
        NewcomerTag {
            tag: "welcometorednote",
            display_en: "#WelcomeToRedNote",
            display_zh: "#欢迎来到小红书",
            lang: Mixed,
            related: &[],
            weight_en: 1.0,
            weight_zh: 4.0,
        },
        NewcomerTag {
            tag: "hellofromchina",
            display_en: "#HelloFromChina",
            display_zh: "#来自中国的问候",
            lang: Zh,
            related: &[],
            weight_en: 0.2,
            weight_zh: 4.0,
        },
        NewcomerTag {
            tag: "中美网友对账",
            display_en: "#USChinaCompareNotes",
            display_zh: "#中美网友对账",
            lang: Mixed,
            related: &["healthcare", "city_life", "finance"],
            weight_en: 1.0,
            weight_zh: 3.0,
        },
    ]
};

/// A hashtag of the demo world, before embeddings.
pub struct TagSpec {
    pub tag: String,
    pub display_en: String,
    pub display_zh: String,
    /// `Some(topic)` for topic tags, `None` for newcomer tags.
    pub topic: Option<usize>,
    /// Index into [`NEWCOMER_TAGS`] for newcomer tags.
    pub newcomer: Option<usize>,
    /// Rank within its topic (curated first), which sets how often posts use it.
    pub rank: usize,
    /// Written in Chinese characters: Chinese-language posts prefer these.
    pub cjk: bool,
}

/// Normalised form of a hashtag: no leading `#`, NFKC, lower case.
pub fn normalise_tag(raw: &str) -> String {
    let trimmed = raw.trim().trim_start_matches('#');
    // Lower-casing can in principle produce non-NFKC text, so normalise once more after it.
    let lower: String = trimmed.nfkc().collect::<String>().to_lowercase();
    lower.nfkc().collect()
}

fn is_cjk(tag: &str) -> bool {
    tag.chars()
        .any(|c| ('\u{2E80}'..='\u{9FFF}').contains(&c) || ('\u{F900}'..='\u{FAFF}').contains(&c))
}

fn camel(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The full tag list: curated topic tags, then newcomer tags, then filler tags dealt
/// round-robin over topics (so each topic gets about the same number) until
/// [`NUM_HASHTAGS`].
pub fn build_tags() -> Vec<TagSpec> {
    let mut specs = Vec::with_capacity(NUM_HASHTAGS);
    let mut seen = BTreeSet::new();
    let mut per_topic_rank = vec![0usize; TOPICS.len()];
    for (t, topic) in TOPICS.iter().enumerate() {
        for &(raw, en, zh) in topic.tags {
            let tag = normalise_tag(raw);
            if seen.insert(tag.clone()) {
                specs.push(TagSpec {
                    cjk: is_cjk(&tag),
                    tag,
                    display_en: en.to_string(),
                    display_zh: zh.to_string(),
                    topic: Some(t),
                    newcomer: None,
                    rank: per_topic_rank[t],
                });
                per_topic_rank[t] += 1;
            }
        }
    }
    for (i, nt) in NEWCOMER_TAGS.iter().enumerate() {
        let tag = normalise_tag(nt.tag);
        if seen.insert(tag.clone()) {
            specs.push(TagSpec {
                cjk: is_cjk(&tag),
                tag,
                display_en: nt.display_en.to_string(),
                display_zh: nt.display_zh.to_string(),
                topic: None,
                newcomer: Some(i),
                rank: i,
            });
        }
    }
    // Each topic walks its own (suffix, stem) grid; stems vary fastest so a topic's fillers
    // do not all share one stem.
    let mut cursor = vec![0usize; TOPICS.len()];
    let mut progressed = true;
    while specs.len() < NUM_HASHTAGS && progressed {
        progressed = false;
        for (t, topic) in TOPICS.iter().enumerate() {
            if specs.len() >= NUM_HASHTAGS {
                break;
            }
            let grid = topic.stems.len() * FILLER_SUFFIXES.len();
            while cursor[t] < grid {
                let (suffix_en, suffix_zh) = FILLER_SUFFIXES[cursor[t] / topic.stems.len()];
                let (stem_en, stem_zh) = topic.stems[cursor[t] % topic.stems.len()];
                cursor[t] += 1;
                let tag = normalise_tag(&format!("{stem_en}{suffix_en}"));
                if seen.insert(tag.clone()) {
                    specs.push(TagSpec {
                        cjk: false,
                        tag,
                        display_en: format!("#{}{}", camel(stem_en), camel(suffix_en)),
                        display_zh: format!("#{stem_zh}{suffix_zh}"),
                        topic: Some(t),
                        newcomer: None,
                        rank: per_topic_rank[t],
                    });
                    per_topic_rank[t] += 1;
                    progressed = true;
                    break;
                }
            }
        }
    }
    specs
}

/// Index of the topic with this key. Only called with keys from this file.
pub fn topic_index(key: &str) -> usize {
    TOPICS
        .iter()
        .position(|t| t.key == key)
        .unwrap_or_else(|| panic!("unknown demo topic key {key:?}"))
}
